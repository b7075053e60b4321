#!/usr/bin/env bash
# Build src/imgclf/serving/imgclf-mms.jar (GatedModelServer + the /execution-parameters plugin) against the
# classes in multi-model-server's own wheel jar: no Maven registry needed, only a JDK (javac + jar).
# The jar is committed package data of imgclf.serving (imgclf.serving.environment.find_mms_jar finds it next to
# the module, in a checkout and in an installed wheel alike), so images need only a JRE; rerun this after
# changing the Java sources.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../../.venv/bin/python}"
mms_jar="$("$python" -c 'import mms, os; print(os.path.join(os.path.dirname(mms.__file__), "frontend", "model-server.jar"))')"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
javac --release 8 -nowarn -cp "$mms_jar" -d "$build" $(find "$here/src" -name '*.java') 2>&1 | grep -v "bootstrap classpath\|^1 warning\|^warning: \[options\]" || true
cp -r "$here/src/META-INF" "$build/"
out="$here/../../src/imgclf/serving/imgclf-mms.jar"
jar --create --file "$out" --date=2026-01-01T00:00:00Z -C "$build" .
echo "built $out"

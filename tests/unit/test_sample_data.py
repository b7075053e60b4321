from collections import Counter

import pytest

from imgclf import sample_data

pytestmark = pytest.mark.unit


def test_sample_data_is_stratified_and_deterministic(tmp_path):
    counts_a = sample_data.write_sample_data(tmp_path / "a")
    sample_data.write_sample_data(tmp_path / "b")
    assert counts_a == {"train": 1259, "valid": 269, "test": 269}
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.png"))
    assert files_a == files_b
    for split in ("train", "valid", "test"):
        per_class = Counter(p.parent.name for p in (tmp_path / "a" / split).rglob("*.png"))
        assert sorted(per_class) == [str(d) for d in range(10)]
        assert max(per_class.values()) - min(per_class.values()) <= 0.2 * max(per_class.values())

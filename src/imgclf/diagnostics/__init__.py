"""Debugger rules, profiler rules and the reports that show them.

    debugger_rules.py   SageMaker Debugger's built-in rules, evaluated locally on smdebug output (needs smdebug)
    profiler_rules.py   the ProfilerReport's rules on an `imgclf train --profile` recording
    report.py           the reports `imgclf report` writes: tables, markdown, html, plots

The rule names live here, torch- and smdebug-free, so the SageMaker side (`imgclf.sagemaker`), the report command
and the local rule engine all read one list.
"""

# SageMaker Debugger built-in rules (sagemaker.debugger.rule_configs function names), evaluated locally by
# imgclf.diagnostics' debugger rules and configured on SageMaker jobs by imgclf.sagemaker.
DEBUGGER_RULES = ("loss_not_decreasing", "vanishing_gradient", "overfit", "overtraining", "poor_weight_initialization")
# SageMaker's profiler rules set on jobs (the local profiler report has its own checks).
PROFILER_RULES = ("LowGPUUtilization", "ProfilerReport")

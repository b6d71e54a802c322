"""Training machinery on mmengine: configs (loading, checks), runners, hooks, the compile wrapper, the demo."""

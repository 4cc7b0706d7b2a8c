"""Events, per-step metrics and trace exporters (Chrome Trace JSON, CSV)."""

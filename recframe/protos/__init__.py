"""Generated protobuf modules of the pipeline config (built from protos/ at install)."""

"""The runtime tests use the shared fixtures of tests/conftest.py: `ray_local` (one private local
Ray instance for all Ray tests) and `mlflow_server` (one MLflow server per session)."""

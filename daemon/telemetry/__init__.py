"""What a process tells its operators: Prometheus metrics, stream and role status in Redis, JSON logs.

Every stage reports through here; nothing here imports a stage.
"""

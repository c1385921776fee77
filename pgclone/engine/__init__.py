"""The job engine: job state (its one writer), claims, the runner, workflows as
data, notifications; nothing of pg_dump.
"""

"""One function per chain step. Each takes the job and reads what earlier
steps recorded on it (``job.result``), never a file they left on disk."""

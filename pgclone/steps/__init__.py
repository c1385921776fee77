"""What each kind of job does, step by step: the step functions, and the
workflows that order them (``pgclone.steps.workflows``).

Importing a module of this package loads only what that module needs: a
system check that asks ``routing`` does not load the dump and restore steps.
"""

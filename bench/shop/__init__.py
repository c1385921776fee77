"""The bench database's tables (``bench/schema.py``) as unmanaged Django models,
so that dump configs can name them: the sharing round's scrub rules and subset."""

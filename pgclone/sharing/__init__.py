"""Data that can leave production: scrub rules, the subset plan and its fixed
point, the decisions a scrubbed dump needs on every column, the credentials
it copies empty.
"""

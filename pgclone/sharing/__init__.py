"""Data that can leave production: scrub rules, the subset plan and its fixed
point, personal-field detection.
"""

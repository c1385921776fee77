"""Everything that speaks SQL or libpq to the server: connections, databases,
the swap, the catalog, roles.
"""

"""The typed contracts of the HTTP API (CONTRACT §2): request bodies, queries and answers as pydantic models.

Services take and return these; the entry layer declares them per route and generates OpenAPI from them.
"""

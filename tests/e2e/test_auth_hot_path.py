"""Authentication of a known key makes no warehouse query; the key cache stays bounded."""

from __future__ import annotations

from common.services import auth


class CountingQueries:
    """Wraps a warehouse's query method and counts the queries that touch the API-key table."""

    def __init__(self, warehouse):
        self.warehouse = warehouse
        self.original = warehouse.query
        self.key_lookups = 0

    def __call__(self, sql, params=None):
        if "org_api_keys" in sql:
            self.key_lookups += 1
        return self.original(sql, params)


def test_a_known_key_is_authenticated_without_a_warehouse_query(runtime, trigger_client, two_tenants, monkeypatch):
    counter = CountingQueries(runtime.warehouse)
    monkeypatch.setattr(runtime.warehouse, "query", counter)
    acme = two_tenants["acme"]
    for _ in range(20):
        assert trigger_client.get("/api/v1/pipelines/templates", headers=acme).status_code == 200
    # onboarding already verified the key in this instance? Either way: at most one lookup, then none.
    assert counter.key_lookups <= 1
    before = counter.key_lookups
    for _ in range(20):
        assert trigger_client.get("/api/v1/data/acme/tables", headers=acme).status_code == 200
    assert counter.key_lookups == before


def test_a_malformed_key_is_refused_without_a_warehouse_query(runtime, trigger_client, two_tenants, monkeypatch):
    counter = CountingQueries(runtime.warehouse)
    monkeypatch.setattr(runtime.warehouse, "query", counter)
    good = two_tenants["acme"]["X-API-Key"]
    broken = good[:-1] + ("A" if good[-1] != "A" else "B")
    response = trigger_client.get("/api/v1/pipelines/templates", headers={"X-API-Key": broken})
    assert response.status_code == 401
    assert response.json["error"] == "invalid_api_key"
    assert counter.key_lookups == 0


def test_the_key_cache_is_bounded(runtime):
    cache = auth.KeyCache(maxsize=3, ttl=60)
    for i in range(10):
        cache.put(f"hash{i}", "acme")
    assert sum(cache.get(f"hash{i}") is not None for i in range(10)) == 3
    cache.forget_org("acme")
    assert all(cache.get(f"hash{i}") is None for i in range(10))

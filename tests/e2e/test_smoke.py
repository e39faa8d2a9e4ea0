"""A first end-to-end pass through the two HTTP functions and the bus."""

from tests.conftest import wait_for_bus


def test_onboarded_tenant_runs_cost_billing_to_complete(runtime, trigger_client, two_tenants):
    acme = two_tenants["acme"]
    accepted = trigger_client.post("/api/v1/pipelines/run/acme/gcp/cost/cost_billing", headers=acme,
                                   json={"date": "2024-05-01"})
    assert accepted.status_code == 202, accepted.json
    wait_for_bus(runtime)
    run = trigger_client.get(f"/api/v1/pipelines/runs/{accepted.json['pipeline_logging_id']}", headers=acme)
    assert run.status_code == 200
    assert run.json["status"] == "COMPLETE"
    assert [s["status"] for s in run.json["steps"]] == ["COMPLETE", "COMPLETE", "SKIPPED"]

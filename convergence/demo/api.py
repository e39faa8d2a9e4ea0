"""The demo's calls to the HTTP API: every onboarding, integration, run and summary goes through a route.

The routes are served in-process by the same WSGI application `convergence serve` runs, so the demo
exercises authentication, validation and the JSON answers exactly as a client over the network would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from common.errors import TerminalError
from common.runtime import Runtime
from common.wiring import wsgi_app

FINAL_STATUSES = {"COMPLETE", "FAILED"}
TRIGGER_BY = "convergence-demo"


class DemoError(TerminalError):
    """The API refused a demo call; the message names the call and the API's answer (never a secret)."""

    code = "demo_failed"


@dataclass
class Run:
    """One pipeline run the demo started: what it asked for, and the run as last read from the API."""

    org: str
    provider: str
    domain: str
    template: str
    date: str
    run_id: str = ""
    view: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"{self.provider}/{self.domain}/{self.template}"

    @property
    def status(self) -> str:
        return self.view.get("status", "PENDING")


class DemoApi:
    """A client of every route the demo uses, holding the root key and each tenant's API key."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.client = wsgi_app("both").test_client()
        root_key = rt.settings.ca_root_api_key
        if root_key is None:
            raise DemoError("the demo needs a root key (CA_ROOT_API_KEY or CONVERGENCE_HOME/root_key)")
        self.root = {"X-CA-Root-Key": root_key.get_secret_value()}
        self.keys: dict[str, dict[str, str]] = {}

    def _expect(self, response: Any, *statuses: int) -> dict[str, Any]:
        if response.status_code not in statuses:
            body = response.json or {}
            raise DemoError(
                f"{response.request.method} {response.request.path} answered {response.status_code}:"
                f" {body.get('error', 'error')}: {body.get('message', '')}"
            )
        return response.json

    def bootstrap(self) -> dict[str, Any]:
        return self._expect(self.client.post("/api/v1/admin/bootstrap", headers=self.root, json={}), 200)

    def onboard(self, org: str, company: str, email: str) -> bool:
        """Onboard `org`, or rotate its key when an earlier demo onboarded it; True when newly onboarded."""
        body = {
            "org_slug": org,
            "company_name": company,
            "admin_email": email,
            "subscription_plan": "professional",
        }
        response = self.client.post("/api/v1/organizations/onboard", headers=self.root, json=body)
        if response.status_code == 409:
            rotated = self.client.post(f"/api/v1/organizations/{org}/api-keys/rotate", headers=self.root)
            self.keys[org] = {"X-API-Key": self._expect(rotated, 200)["api_key"]}
            return False
        self.keys[org] = {"X-API-Key": self._expect(response, 201)["api_key"]}
        return True

    def setup_integration(
        self,
        org: str,
        provider: str,
        credential: str | dict[str, Any],
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Set up the integration; the provider's check must prove it (ACTIVE), as every demo source can be."""
        body: dict[str, Any] = {"credential": credential, "settings": settings or {}}
        response = self.client.post(
            f"/api/v1/integrations/{org}/{provider}/setup", headers=self.keys[org], json=body
        )
        answer = self._expect(response, 200)
        if answer.get("status") != "ACTIVE":
            raise DemoError(
                f"the {provider} integration of {org} is {answer.get('status')}: {answer.get('message', '')}"
            )

    def start(self, run: Run) -> Run:
        """Trigger the run (202) and remember its pipeline_logging_id."""
        body = {"date": run.date, "trigger_by": TRIGGER_BY}
        response = self.client.post(
            f"/api/v1/pipelines/run/{run.org}/{run.path}", headers=self.keys[run.org], json=body
        )
        if response.status_code == 409:
            raise DemoError(
                f"{run.org} {run.path} for {run.date}: an identical run is still in flight"
                f" ({response.json.get('pipeline_logging_id')}), left by an interrupted demo;"
                " run the demo with a fresh CONVERGENCE_HOME"
            )
        run.run_id = self._expect(response, 202)["pipeline_logging_id"]
        return run

    def wait(self, runs: list[Run], timeout: float = 180.0) -> None:
        """Let the bus deliver every step, reading each run through the status route until it is final."""
        deadline = time.monotonic() + timeout
        for run in runs:
            while True:
                path = f"/api/v1/pipelines/runs/{run.run_id}"
                run.view = self._expect(self.client.get(path, headers=self.keys[run.org]), 200)
                if run.status in FINAL_STATUSES or time.monotonic() > deadline:
                    break
                drain = getattr(self.rt.bus, "drain", None)
                drain(timeout=0.5) if drain is not None else time.sleep(0.2)

    def cost_summary(self, org: str, start: str, end: str, group_by: str) -> dict[str, Any]:
        query = {"start": start, "end": end, "group_by": group_by}
        response = self.client.get(f"/api/v1/costs/{org}/summary", headers=self.keys[org], query_string=query)
        return self._expect(response, 200)

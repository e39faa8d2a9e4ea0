"""The one error object every error status of the API answers with (CONTRACT §2)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApiError(BaseModel):
    """`error` (a short machine code) and `message` (a sentence), plus details of some errors.

    Details depend on the error: `parameter` (a refused query parameter), `errors` (the fields of an invalid
    body), `pipeline_logging_id` (the run already in flight), `allowed` (methods of a 405), `retry_after`
    (seconds, also in the Retry-After header of a 429 or 503), `currencies`, `provider`, `status`, and
    `incident_id` on a 500 (the platform's fault: the id of the logged incident to quote to the operator).
    """

    model_config = ConfigDict(extra="allow")

    error: str = Field(min_length=1, description="Short machine code, e.g. invalid_query, org_exists.")
    message: str = Field(min_length=1, description="What went wrong, as a sentence.")

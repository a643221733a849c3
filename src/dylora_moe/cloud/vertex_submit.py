"""Send a built CustomJob to Vertex AI; optionally wait for it to finish."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from dylora_moe.cloud.vertex_spec import NO_CREDENTIALS, VertexJobOptions, scheduling_kwargs
from dylora_moe.errors import UserError

if TYPE_CHECKING:
    from google.cloud import aiplatform


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def submit_job(
    job: aiplatform.CustomJob,
    options: VertexJobOptions,
    *,
    wait: bool = False,
    out: TextIO | None = None,
    create_request_timeout: float | None = 120.0,
) -> str:
    """Create the job (non-blocking), print its name and console link; `wait` blocks until a final state.

    Returns the final state name when waiting, else the state right after creation.
    """
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    try:
        job.submit(create_request_timeout=create_request_timeout, **scheduling_kwargs(options))
    except auth_exceptions.DefaultCredentialsError as exc:
        raise UserError(NO_CREDENTIALS.format(exc=_one_line(exc))) from exc
    except api_exceptions.GoogleAPICallError as exc:
        raise UserError(f"Vertex AI refused the job: {_one_line(exc)}", exit_code=1) from exc
    if out is not None:
        print(f"submitted {job.resource_name}", file=out)
        print(f"console: {job._dashboard_uri()}", file=out)
    if not wait:
        return job.gca_resource.state.name  # from the create response; `job.state` would poll again
    try:
        job.wait_for_completion()  # the SDK logs each state change while it polls
    except RuntimeError as exc:
        raise UserError(f"job {job.resource_name} did not succeed: {_one_line(exc)}", exit_code=1) from exc
    if out is not None:
        print(f"final state: {job.gca_resource.state.name}", file=out)
    return job.gca_resource.state.name

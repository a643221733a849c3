"""Cloud training: Vertex AI job spec and submission, and the container entrypoint.

`vertex_spec` builds a CustomJob (no network), `vertex_submit` sends it, `cli` is `dylora-moe submit vertex`,
`entrypoint` runs inside the image (secrets, CLUSTER_SPEC, exec of the trainer), `secrets` and `cluster_spec`
hold the two formats they share. The google-cloud SDKs are imported lazily, only where they are used.
"""

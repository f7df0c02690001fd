"""Issue 15's classes of attack, each tried as a real unprivileged user against a real executor and a
real Jupyter server; docs/security.md's threat table names the test of each."""

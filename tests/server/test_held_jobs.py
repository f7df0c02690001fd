"""A server with jobs_on_server_stop = "stop": what its kernels start ends with it too."""

from __future__ import annotations

import pytest

from tests.executor.conftest import wait_for


@pytest.fixture
def jp_server_config(executor_daemon):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_worker": True}, "allow_unauthenticated_access": False},
        "JupyterWorker": {"socket": executor_daemon.socket, "embedded_executor": False, "jobs_on_server_stop": "stop"},
    }


async def run_cell(client, code: str) -> str:
    text: list[str] = []

    def collect(message: dict) -> None:
        if message["msg_type"] == "stream":
            text.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            text.append(message["content"]["evalue"])

    await client.execute_interactive(code, output_hook=collect, timeout=120)
    return "".join(text)


async def test_a_job_a_kernel_started_is_stopped_with_the_server_and_the_kernel_cannot_start_more(
    jp_serverapp, executor_daemon
):
    extension = next(iter(jp_serverapp.extension_manager.extension_apps["jupyter_worker"]))
    await extension.ensure_executor()
    kernels = jp_serverapp.kernel_manager
    kernel_id = await kernels.start_kernel()
    client = kernels.get_kernel(kernel_id).client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        submit = "from jupyter_worker.client import Client\nprint(Client().run({'command': ['sleep', '300']}).id)"
        job_id = (await run_cell(client, submit)).strip()
        await extension.stop_extension()
        with executor_daemon.client() as executor:
            ended = wait_for(
                lambda: executor.get(job_id).status == "STOPPED" and executor.get(job_id),
                what="the kernel's job to stop with the server",
            )
        assert ended.ending == "stopped by root's server ending"
        refused = await run_cell(client, "Client().run({'command': ['true']})")
        assert "is not connected: the Jupyter server this job would end with has stopped" in refused
    finally:
        client.stop_channels()
        await kernels.shutdown_kernel(kernel_id, now=True)

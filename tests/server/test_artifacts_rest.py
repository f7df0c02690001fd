"""Artifacts and paged listings through REST: a real Jupyter server, a real executor, real jobs."""

from __future__ import annotations

import json
import os

import pytest
from tornado.httpclient import HTTPClientError

from tests.server.conftest import finished, submit


async def test_a_rest_job_with_artifacts_copies_its_files_before_it_is_reported_ended(jp_fetch, conforms, tmp_path):
    tmp_path = tmp_path / "artifacts"
    tmp_path.mkdir(mode=0o700)
    script = "cd /work && mkdir p && echo a > p/a.csv && echo b > b.txt && ln -s /etc/shadow s"
    artifacts = {"destination": str(tmp_path), "patterns": ["**/*.csv", "s"]}
    job = conforms(json.dumps(await submit(jp_fetch, command=["sh", "-c", script], artifacts=artifacts)), "Job")
    done = conforms(json.dumps(await finished(jp_fetch, job["id"])), "Job")
    outcome = done["artifacts"]
    assert outcome["folder"] == str(tmp_path / job["id"].replace("-", "")[:8])
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(outcome["folder"])]
    assert (tmp_path / outcome["folder"] / "p" / "a.csv").read_text() == "a\n"
    assert sorted(os.listdir(outcome["folder"])) == ["p"]
    assert (outcome["copied"], outcome["skipped"], outcome["skipped_examples"]) == (
        1,
        1,
        [["s", "a symlink, never copied"]],
    )


@pytest.mark.parametrize(
    "artifacts",
    ["relative/dir", {"destination": "/nonexistent-jw"}, {"destination": "/tmp", "patterns": ["../x"]}, 3],
)
async def test_bad_artifacts_over_rest_are_400_with_one_reason(jp_fetch, conforms, artifacts):
    with pytest.raises(HTTPClientError) as caught:
        await submit(jp_fetch, command=["true"], artifacts=artifacts)
    assert caught.value.code == 400
    assert conforms(caught.value.response.body, "Error")["reason"] == "invalid"


async def test_a_folder_of_2500_entries_is_listed_in_pages_over_rest(jp_fetch, conforms):
    job = await submit(jp_fetch, command=["sh", "-c", "mkdir /work/m && cd /work/m && seq 1 2500 | xargs touch"])
    await finished(jp_fetch, job["id"])
    names, offset = [], 0
    while offset is not None:
        params = {"path": "m", "offset": str(offset)}
        page = conforms(
            (await jp_fetch("api", "worker", "jobs", job["id"], "files", params=params)).body, "WorkListing"
        )
        names += [e["name"] for e in page["entries"]]
        offset = page["next_offset"]
    assert sorted(names, key=int) == [str(n) for n in range(1, 2501)]

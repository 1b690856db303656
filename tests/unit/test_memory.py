"""The operator process's memory: `run` limits glibc's arenas before threads start, trim returns free pages
(memory.py), and the operator does not import what only the worker Jobs need.

Each case runs in a child process: arenas are process-wide and created once per thread.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

THREADS = 8

HEAPS = textwrap.dedent(
    f"""
    import ctypes, os, tempfile, threading

    def heaps():
        '''Arenas of this process, as malloc_info reports them (one <heap> each).'''
        libc = ctypes.CDLL(None)
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        fd, path = tempfile.mkstemp()
        os.close(fd)
        stream = libc.fopen(path.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        with open(path) as f:
            return f.read().count("<heap nr=")

    def threads_allocate():
        '''{THREADS} threads alive at once, each allocating from the C heap (buffers above pymalloc's 512 bytes).'''
        together = threading.Barrier({THREADS})
        def work():
            kept = [bytearray(4096) for _ in range(64)]
            together.wait()
        threads = [threading.Thread(target=work) for _ in range({THREADS})]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    """
)


def child(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", HEAPS + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    return done.stdout.strip()


def test_run_limits_the_malloc_arenas_before_any_thread_starts() -> None:
    # `run` up to loading its configuration, where the child starts its threads and stops it
    heaps = child(
        """
        from enclave_operator import cli, memory, settings
        def load(*_, **__):
            threads_allocate()
            print(heaps())
            raise settings.ConfigError("stop here")
        settings.load = load
        assert cli.main(["run", "--config", "unused.yaml"]) == 2
        """
    )
    assert int(heaps) <= 2  # memory.ARENAS
    # without the limit the same threads get arenas of their own (up to 8 per core): the check above can fail
    assert int(child("threads_allocate(); print(heaps())")) > 2


def test_trim_returns_free_pages_of_a_thread_arena() -> None:
    released = child(
        """
        from enclave_operator import memory
        def work():
            blocks = [bytearray(65536) for _ in range(256)]  # below the mmap threshold: in the thread's arena
            del blocks[:-1]  # the last one stays: the free space is not at the arena's top, nothing trims it
            print(memory.trim())
        t = threading.Thread(target=work)
        t.start()
        t.join()
        """
    )
    assert released == "True"


def test_the_operator_does_not_load_the_workers_dicom_stack() -> None:
    # pydicom, numpy and dicomweb-client are ~40 MiB resident: the ingest worker's, not the operator's
    loaded = child(
        """
        import sys
        from enclave_operator import cli, handlers
        print(sorted(m for m in ("pydicom", "numpy", "dicomweb_client", "PIL") if m in sys.modules))
        """
    )
    assert loaded == "[]"


IDENTITY_LIBRARIES = ("ldap3", "python_freeipa", "requests", "dns")
"""ldap3, requests + python-freeipa, dnspython: ~14 MiB resident together; for directories and FederatedNode probes."""

RUNTIME = """
    import asyncio, os, sys, tempfile
    from enclave_operator import cli, handlers, settings
    from enclave_operator.runtime import Runtime

    directory = tempfile.mkdtemp()
    with open(os.path.join(directory, "kubeconfig"), "w") as f:
        f.write('''{"apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}''')
    os.environ.update(KUBECONFIG=os.path.join(directory, "kubeconfig"), ENCLAVE_S3_ACCESS_KEY="access",
                      ENCLAVE_S3_SECRET_KEY="secret-key-of-the-test", ENCLAVE_SIGNING_KEY="0" * 64,
                      ENCLAVE_IPA_PASSWORD="pw", ENCLAVE_LDAP_PASSWORD="pw")
    config = {"s3": {"endpoint": "127.0.0.1:9000", "secure": False}, **extra}

    async def main():
        runtime = Runtime.create(settings.parse(config))
        print(type(runtime.backends.identity).__name__, sorted(m for m in libraries if m in sys.modules))

    asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "NoneType []"),
        ({"identity": {"provider": "freeipa", "freeipa": {"url": "https://ipa.example.org", "username": "svc"}}},
         "FreeIpaClient ['python_freeipa', 'requests']"),
        ({"identity": {"provider": "ldap", "ldap": {"uri": "ldap://ldap.example.org", "bindDn": "cn=svc",
                                                    "groupsBaseDn": "ou=groups", "usersBaseDn": "ou=people"}}},
         "LdapClient ['ldap3']"),
    ],
    ids=["kubernetes-s3", "freeipa", "ldap"],
)  # fmt: skip
def test_the_operator_loads_only_the_identity_library_it_is_configured_for(extra: dict[str, object],
                                                                          expected: str) -> None:  # fmt: skip
    # the operator's imports load none of them; building the runtime loads the configured directory's only
    loaded = child(f"extra = {extra!r}\nlibraries = {IDENTITY_LIBRARIES!r}\n" + textwrap.dedent(RUNTIME))
    assert loaded == expected

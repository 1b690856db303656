"""Process-wide state of a running operator: settings, backend clients and their bounds, per-object locks,
reconcile slots."""

from __future__ import annotations

import asyncio
import dataclasses

from lightkube.resources.authentication_v1 import SelfSubjectReview

from enclave_operator import signing
from enclave_operator.backends import (
    identity,
    s3_minio,
    slurm_accounts,
    slurm_reservations,
    throttle,
)
from enclave_operator.backends import kube as kube_api
from enclave_operator.engine.locks import KeyedLocks
from enclave_operator.engine.workqueue import WorkQueue
from enclave_operator.federation import profiles
from enclave_operator.federation.profiles import Profiles
from enclave_operator.priority import Slots
from enclave_operator.reconcilers.gpu_bookings import Ledger
from enclave_operator.reconcilers.research_project import Backends
from enclave_operator.settings import OperatorSettings, S3Settings


def s3_clients(s3: S3Settings) -> s3_minio.S3Clients:
    """Admin clients of one S3 store (the enclave's, or a backup target) from its settings and credentials."""
    access, secret = s3.credentials()
    conn = s3_minio.S3Connection(
        endpoint=s3.endpoint,
        access_key=access,
        secret_key=secret.get_secret_value(),
        secure=s3.secure,
        ca_file=str(s3.ca_file) if s3.ca_file else None,
        region=s3.region,
        timeout_seconds=s3.timeout_seconds,
        max_connections=s3.max_concurrent_calls,
    )
    return s3_minio.S3Clients(conn)


def identity_client(settings: OperatorSettings) -> identity.IdentityClient | None:
    """The configured directory's client. Its module is imported here, not at the top: ldap3, requests and
    python-freeipa are ~7 MiB resident, loaded only by the enclaves that use them (tests/unit/test_memory.py)."""
    if settings.identity is None:
        return None
    if settings.identity.provider == "freeipa":
        from enclave_operator.backends import identity_freeipa

        assert settings.identity.freeipa is not None
        return identity_freeipa.FreeIpaClient(settings.identity.freeipa)
    from enclave_operator.backends import identity_ldap

    assert settings.identity.ldap is not None
    return identity_ldap.LdapClient(settings.identity.ldap)


def work_queue(settings: OperatorSettings) -> WorkQueue:
    intervals = settings.intervals
    return WorkQueue(intervals.resync_seconds, intervals.resync_jitter, intervals.resyncs_per_second,
                     intervals.retry_seconds)  # fmt: skip


@dataclasses.dataclass
class Runtime:
    settings: OperatorSettings
    backends: Backends
    signer: signing.Signer | None = None
    """Signs and verifies approvals (the key from webhook.signingKeyEnv)."""
    identity: str = ""
    """The operator's own Kubernetes username (SelfSubjectReview): its requests never approve anything."""
    profiles: Profiles = dataclasses.field(default_factory=lambda: Profiles({}))
    """The requirements profiles FederatedNodes may name (built in + federation.profileDirs), loaded once."""
    locks: KeyedLocks = dataclasses.field(default_factory=KeyedLocks)
    """One lock per object uid: timers and event handlers of one object never run at once."""
    slots: Slots = dataclasses.field(default_factory=lambda: Slots(16))
    """Reconciles at once, by priority (settings.throttle.reconciles)."""
    ledger: Ledger = dataclasses.field(default_factory=Ledger)
    """GPU bookings, projects and GPU nodes in memory (webhook, booking controller, project quota)."""
    scontrol: slurm_accounts.Sacctmgr | None = None
    """scontrol runner (GPU reservations, Slurm node capacity); None without Slurm."""
    queue: WorkQueue = dataclasses.field(default_factory=lambda: WorkQueue(300.0, 0.1, 20.0))
    """The projects and federated nodes to reconcile, now or later (settings.intervals)."""
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    """Background loops (Slurm capacity), cancelled at cleanup."""

    async def learn_identity(self) -> str:
        """Ask the API server who this process is (authentication.k8s.io/v1 SelfSubjectReview)."""
        review = await self.backends.kube.create(SelfSubjectReview())
        info = review.status.userInfo if review.status else None
        self.identity = str(info.username) if info and info.username else ""
        return self.identity

    @classmethod
    def create(cls, settings: OperatorSettings) -> Runtime:
        limits = settings.throttle
        throttle.configure("kubernetes", per_second=limits.kubernetes_per_second)
        throttle.configure("s3", per_second=limits.s3_per_second, threads=settings.s3.max_concurrent_calls)
        throttle.configure("identity", per_second=limits.identity_per_second)
        throttle.configure("slurm", per_second=limits.slurm_per_second)
        kube = kube_api.client(connections=limits.kubernetes_connections)
        slurm = slurm_accounts.Sacctmgr(settings.slurm) if settings.slurm is not None else None
        scontrol = slurm_reservations.scontrol(settings.slurm) if settings.slurm is not None else None
        targets = {t.name: s3_clients(t) for t in settings.federation.backup_targets}
        backends = Backends(kube=kube, s3=s3_clients(settings.s3), identity=identity_client(settings), slurm=slurm,
                            backup_targets=targets)  # fmt: skip
        signer = settings.webhook.signer()
        slots = Slots(limits.reconciles, reserved=limits.reserved_for_edits)
        return cls(settings, backends, signer=signer, profiles=profiles.load(settings.federation.profile_dirs),
                   slots=slots, ledger=Ledger(signer), scontrol=scontrol,
                   queue=work_queue(settings))  # fmt: skip

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:  # their watch streams end before the client that carries them closes
            await asyncio.wait(self.tasks, timeout=5)
        await self.backends.kube.close()
        if self.backends.identity is not None:
            await self.backends.identity.close()

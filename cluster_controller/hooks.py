"""Helm's hook semantics on a cluster: which hooks run now, in what order, and when again. Pure.

fleetbus puts `pre-install` and `pre-upgrade` hooks in the `init` phase and `post-install` /
`post-upgrade` in `postInstall` (`normalizer.phases`); the hook's own events stay with the Step,
and here they decide, as `helm install` / `helm upgrade` / `helm uninstall` would:

* a Task's first revision on this cluster is an install: only `pre-install` and `post-install`
  hooks run; every later revision (a new spec digest after one became Ready) is an upgrade:
  only `pre-upgrade` and `post-upgrade` hooks run;
* on removal `pre-delete` hooks run before anything is deleted, `post-delete` hooks after
  every other object of the Task is gone;
* hooks run by weight, lowest first, one weight after another (all hooks of a weight done
  before the next weight starts); objects of the phase that are not hooks come first;
* a hook runs again on every revision it belongs to (its completion is keyed by revision), so
  an upgrade hook runs on each upgrade, as Helm's does.

The release bookkeeping (`ReleaseStatus` in the Task's status) is folded by `next_release` and
`settle_release`: `.Release.Revision`, and whether the revision is an install or an upgrade.
"""

from __future__ import annotations

import msgspec

from kube_contract.model import ReleaseStatus, StepSpec
from taskset.digest import digest_of
from taskset.model import HookInfo, Phase

_INSTALL_EVENT: dict[str, str] = {"init": "pre-install", "postInstall": "post-install"}
_UPGRADE_EVENT: dict[str, str] = {"init": "pre-upgrade", "postInstall": "post-upgrade"}


def runs_now(hook: HookInfo | None, phase: Phase, *, upgrade: bool) -> bool:
    """Whether a Step of `phase` with `hook` runs in this revision (install or upgrade)."""
    if hook is None or phase not in _INSTALL_EVENT:
        return True
    wanted = (_UPGRADE_EVENT if upgrade else _INSTALL_EVENT)[phase]
    return wanted in hook.events


def is_post_delete(hook: HookInfo | None) -> bool:
    """A hook that runs only after the Task's other objects are deleted."""
    return hook is not None and "post-delete" in hook.events and "pre-delete" not in hook.events


def order_key(hook: HookInfo | None) -> tuple[int, int]:
    """Where a Step's group comes in its phase: non-hooks first, then hooks by weight."""
    return (0, 0) if hook is None else (1, hook.weight)


def revision_digest(spec: StepSpec, step_digest: str, revision: int) -> str:
    """The digest a Step's completion is recorded under: a hook of `init` or `postInstall`
    completes once per revision; anything else once per spec. Revision 1 keeps the plain digest,
    so Steps completed before revisions were kept stay complete."""
    if spec.hook is None or spec.phase not in _INSTALL_EVENT or revision <= 1:
        return step_digest
    return digest_of({"step": step_digest, "revision": revision})


def next_release(current: ReleaseStatus, spec_digest: str, *, ready_digest: str) -> ReleaseStatus:
    """The release a Task's spec is applied as: a new revision whenever the spec digest moves;
    an upgrade when an earlier revision became Ready on this cluster.

    `ready_digest` is the digest the Task's status is Ready for, if it is: a Task reconciled
    before releases were recorded counts as deployed at revision 1 for that digest."""
    if current.revision == 0 and ready_digest:
        current = ReleaseStatus(revision=1, digest=ready_digest, deployed=1)
    if current.digest == spec_digest and current.revision > 0:
        return current
    return ReleaseStatus(
        revision=current.revision + 1,
        digest=spec_digest,
        upgrade=current.deployed > 0,
        deployed=current.deployed,
    )


def settle_release(release: ReleaseStatus, *, ready: bool) -> ReleaseStatus:
    """The release once the Task's status is known: Ready makes this revision the deployed one."""
    if ready and release.deployed != release.revision:
        return msgspec.structs.replace(release, deployed=release.revision)
    return release

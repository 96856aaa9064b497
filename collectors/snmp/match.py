"""Which SNMP profile serves a device: the `match` section of a profile (sysObjectID, sysDescr, a probe)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from collectors.common.profile import Profile, norm_oid
from collectors.common.profile import load_profiles as load_from

PROFILE_DIR = Path(__file__).parent / "profiles"


class Match(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sys_object_id: list[str] = Field(default_factory=list, description="prefixes; the longest match wins")
    sys_descr: str | None = Field(None, description="regular expression, for auto-detection fallback")
    probe: str | None = Field(None, description="an object (or subtree) the device answers only if this profile "
                                                "is its: asked once when the profile is a candidate")
    standard: bool = Field(False, description="a standard MIB, tried (by its probe) on devices no vendor "
                                              "profile matches")


def load_profiles(directory: Path = PROFILE_DIR) -> dict[str, Profile]:
    """The SNMP profiles (collectors/snmp/profiles/), `match` sections checked."""
    return load_from(directory, Match)


def candidates(profiles: dict[str, Profile], sys_object_id: str, sys_descr: str = "") -> list[Profile]:
    """Every profile that could serve the device, best first: sysObjectID matches (longest prefix first), then
    sysDescr matches, then the standard MIBs. Those with a probe are kept only if the device answers it
    (detect_profile asks); the first without a probe ends the search."""
    oid = norm_oid(sys_object_id)
    by_oid: list[tuple[int, Profile]] = []
    for p in profiles.values():
        best = max((len(norm_oid(pre)) for pre in p.match.sys_object_id
                    if oid == norm_oid(pre) or oid.startswith(norm_oid(pre) + ".")), default=-1)
        if best >= 0:
            by_oid.append((best, p))
    out = [p for _, p in sorted(by_oid, key=lambda x: -x[0])]
    out += [p for p in profiles.values() if p not in out and p.match.sys_descr
            and re.search(p.match.sys_descr, sys_descr or "")]
    out += [p for p in profiles.values() if p not in out and p.match.standard and p.match.probe]
    return out


def match_profile(profiles: dict[str, Profile], sys_object_id: str, sys_descr: str = "") -> Profile | None:
    """The profile whose sysObjectID prefix is the longest match; then sysDescr patterns (no probing)."""
    oid = norm_oid(sys_object_id)
    best, best_len = None, -1
    for p in profiles.values():
        for prefix in p.match.sys_object_id:
            pre = norm_oid(prefix)
            if (oid == pre or oid.startswith(pre + ".")) and len(pre) > best_len:
                best, best_len = p, len(pre)
    if best is not None:
        return best
    for p in profiles.values():
        if p.match.sys_descr and re.search(p.match.sys_descr, sys_descr or ""):
            return p
    return None



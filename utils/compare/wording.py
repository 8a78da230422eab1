"""How the comparison's numbers read in report.md: mean ± sd, signed percents, one metric against another."""
from __future__ import annotations

from utils.compare.stats import Stat


def format_stat(stat: Stat | None, digits: int = 3, thousands: bool = False) -> str:
    """'0.433 ± 0.021', '0.433' for one value, 'n/a' for none."""
    if stat is None or stat.mean is None:
        return "n/a"
    fmt = f"{{:,.{digits}f}}" if thousands else f"{{:.{digits}f}}"
    return fmt.format(stat.mean) + ("" if stat.sd is None else " ± " + fmt.format(stat.sd))


def format_percent(stat: Stat) -> str:
    """A delta_m Stat as signed percent, with the sd when there is one."""
    if stat.mean is None:
        return "n/a"
    return f"{100 * stat.mean:+.1f}" + ("" if stat.sd is None else f" ± {100 * stat.sd:.1f}") + " %"


def beats_noise(sa: Stat, sb: Stat) -> bool | None:
    """Whether the gap between two means is larger than the larger sd; None when a side has no sd (one seed)."""
    if sa.mean is None or sb.mean is None or sa.sd is None or sb.sd is None:
        return None
    return abs(sa.mean - sb.mean) > max(sa.sd, sb.sd)


def versus(a: str, sa: Stat, b: str, sb: Stat, label: str) -> str:
    """One metric of a against b: both means, which is higher, and whether the gap beats the larger sd."""
    diff = sa.mean - sb.mean
    sds = [s.sd for s in (sa, sb) if s.sd is not None]
    if not sds:
        noise = "sd n/a with one seed"
    elif len(sds) == 1:  # one side has a single seed: its spread is unknown, so no claim against the noise
        noise = f"sd n/a: {a if sa.sd is None else b} has one seed"
    else:
        noise = f"sd {format_stat(Stat(sa.sd, None, 1))} vs {format_stat(Stat(sb.sd, None, 1))}; the difference is " \
                f"{'larger' if beats_noise(sa, sb) else 'not larger'} than the larger sd"
    if diff == 0:
        return f"{label} {sa.mean:.3f} for both ({noise})"
    higher = a if diff > 0 else b
    return f"{label} {sa.mean:.3f} vs {sb.mean:.3f}, {higher} higher by {abs(diff):.3f} ({noise})"

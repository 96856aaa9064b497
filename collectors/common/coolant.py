"""Heat a liquid loop removes, from its flow and temperatures, where the unit does not report it.

Q = V' x rho x c_p x (T_return - T_supply): flow in L/min over 60 s, the fluid's volumetric heat capacity
rho x c_p in J/(L K). The figures are at 30 C, a CDU's secondary loop (ASHRAE Handbook, Fundamentals, ch. 31,
secondary coolants; propylene and ethylene glycol by volume); over 20..45 C they move by about 1%, less than
the flow meter's own error. Any other fluid: its volumetric heat capacity in the device's configuration.
"""

from __future__ import annotations

# J per litre per kelvin
VOLUMETRIC_HEAT_CAPACITY: dict[str, float] = {
    "water": 4160.0,  # 995.7 kg/m3 x 4.178 kJ/(kg K)
    "pg25": 4000.0,  # 25% propylene glycol: ~1018 kg/m3 x ~3.93 kJ/(kg K)
    "pg30": 3950.0,  # 30% propylene glycol: ~1024 kg/m3 x ~3.86 kJ/(kg K)
    "eg25": 3810.0,  # 25% ethylene glycol: ~1031 kg/m3 x ~3.70 kJ/(kg K)
}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def complete(fields: dict, fluid: str, heat_capacity: float | None = None) -> None:
    """A cooling row's delta temperature and heat removed, filled in from its own readings where the unit gives
    the parts but not the figure; `heat_removed_basis` says which (in place)."""
    supply, ret = fields.get("coolant_supply_temperature_celsius"), fields.get("coolant_return_temperature_celsius")
    if "coolant_delta_temperature_celsius" not in fields and _number(supply) and _number(ret):
        fields["coolant_delta_temperature_celsius"] = round(ret - supply, 3)
    if _number(fields.get("heat_removed_watts")):
        fields.setdefault("heat_removed_basis", "reported")
        return
    flow, delta = fields.get("coolant_flow_litres_per_minute"), fields.get("coolant_delta_temperature_celsius")
    if not (_number(flow) and _number(delta)):
        return
    capacity = heat_capacity if heat_capacity is not None else VOLUMETRIC_HEAT_CAPACITY[fluid]
    fields["heat_removed_watts"] = round(max(flow, 0.0) / 60.0 * capacity * delta, 1)
    fields["heat_removed_basis"] = f"derived_{fluid}"

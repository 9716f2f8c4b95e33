"""The scenario schema: pydantic models (``extra="forbid"``) loaded from YAML.

``load_scenario(path, overrides)`` reads a file with ``yaml.safe_load``, applies ``--set
key.path=value`` overrides, validates, and checks the plug-in options (MAC, selection,
algorithm ``fl.options``, mobility, drops, path loss, rate mapping) against each plug-in's
own config. Every problem becomes one line of a :class:`ScenarioError` naming the key path,
the constraint, the value received and the fix, e.g.::

    network.uplink_bandwidth_hz: must be > 0; got -5.0. Fix: give a positive number.

``fedwave schema`` prints ``Scenario.model_json_schema()`` for editor completion.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

__all__ = ["Scenario", "ScenarioError", "load_scenario", "parse_scenario", "apply_overrides",
           "parse_set"]


class ScenarioError(ValueError):
    """A scenario problem; ``lines`` holds one message per problem (key path first)."""

    def __init__(self, lines: list[str], source: str | None = None) -> None:
        self.lines = lines
        head = f"Invalid scenario{f' {source}' if source else ''}:"
        super().__init__("\n".join([head] + [f"  - {ln}" for ln in lines]))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _kind_shorthand(value: Any) -> Any:
    """``mac: equal_share`` means ``mac: {kind: equal_share}``."""
    return {"kind": value} if isinstance(value, str) else value


class _KindSpec(BaseModel):
    """A plug-in reference: ``kind`` plus that plug-in's own options (checked after load)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return _kind_shorthand(v)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# ----------------------------------------------------------------------------- network
class SingleCellLayout(_Model):
    kind: Literal["single_cell"]
    radius_m: float = Field(250.0, gt=0, description="Cell radius (drop area), m.")
    height_m: float = Field(25.0, gt=0, description="BS antenna height, m.")
    n_sectors: Literal[1, 3] = 1


class HexGridLayout(_Model):
    kind: Literal["hex_grid"]
    n_rings: int = Field(1, ge=0, description="Rings around the centre site (1 -> 7 sites).")
    isd_m: float = Field(500.0, gt=0, description="Inter-site distance, m.")
    height_m: float = Field(25.0, gt=0)
    n_sectors: Literal[1, 3] = 3


class ExplicitLayout(_Model):
    kind: Literal["explicit"]
    sites_xy_m: list[tuple[float, float]] = Field(description="Site positions [[x, y], ...], m.")
    height_m: float = Field(25.0, gt=0)
    n_sectors: Literal[1, 3] = 1
    bounds_m: tuple[float, float, float, float] | None = Field(
        None, description="(xmin, xmax, ymin, ymax) of the area, m; default: sites ± 250 m.")

    @field_validator("sites_xy_m")
    @classmethod
    def _non_empty(cls, v):
        if len(v) == 0:
            raise ValueError("the layout needs at least one site")
        return v


Layout = Annotated[Union[SingleCellLayout, HexGridLayout, ExplicitLayout],
                   Field(discriminator="kind")]


class FadingSpec(_Model):
    kind: Literal["none", "rayleigh", "rician", "rician_los"] = Field(
        "rayleigh", description="rician_los: Rician on LOS links, Rayleigh on NLOS ones.")
    k_factor_db: float | None = Field(
        None, description="Rician K-factor, dB (default: the path-loss scenario's 38.901 mean).")
    block_s: float = Field(0.01, gt=0, description=(
        "Fading block, s: link state (and rates) change only at multiples of it."))
    time_correlated: bool = Field(True, description="Jakes-correlated blocks (else i.i.d.).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return _kind_shorthand(v)


class ShadowingSpec(_Model):
    enabled: bool = Field(True, description=(
        "Correlated log-normal shadowing with the path-loss model's sigma and decorrelation."))


class AssociationSpec(_Model):
    hysteresis_db: float = Field(3.0, ge=0)
    time_to_trigger_s: float = Field(0.0, ge=0)


class NetworkSpec(_Model):
    layout: Layout
    carrier_hz: float = Field(3.5e9, gt=0)
    pathloss: _KindSpec = Field(default_factory=lambda: _KindSpec(kind="uma"))
    fading: FadingSpec = Field(default_factory=FadingSpec)
    shadowing: ShadowingSpec = Field(default_factory=ShadowingSpec)
    noise_figure_db: float = Field(5.0, ge=0, description="BS (uplink receiver) noise figure, dB.")
    ue_noise_figure_db: float = Field(9.0, ge=0, description="UE (downlink) noise figure, dB.")
    bs_tx_power_dbm: float = Field(46.0, description="BS transmit power over the band, dBm.")
    ue_height_m: float = Field(1.5, gt=0)
    uplink_bandwidth_hz: float = Field(20e6, gt=0, description="Uplink band per cell, Hz.")
    downlink_bandwidth_hz: float = Field(20e6, gt=0, description="Downlink band per cell, Hz.")
    mac: _KindSpec = Field(default_factory=lambda: _KindSpec(kind="equal_share"))
    rate: _KindSpec = Field(default_factory=lambda: _KindSpec(kind="shannon"),
                            description="Rate mapping: {kind: shannon, ...} or {kind: cqi, ...}.")
    association: AssociationSpec = Field(default_factory=AssociationSpec)
    outage_timeout_s: float | None = Field(
        None, gt=0, description="A transfer in outage this long fails (None: wait).")


# ----------------------------------------------------------------------------- clients
class GroupSpec(_Model):
    name: str
    fraction: float = Field(1.0, gt=0, description="Share of the clients (normalised).")
    mobility: _KindSpec = Field(default_factory=lambda: _KindSpec(kind="static"))
    tx_power_dbm: float | None = Field(None, description="Override clients.tx_power_dbm.")


class DeviceSpec(_Model):
    name: str
    flops: float = Field(gt=0, description="Sustained training FLOP/s.")
    power_w: float = Field(3.0, ge=0, description="Power while computing, W.")
    rx_power_w: float = Field(0.5, ge=0, description="Radio power while receiving, W.")
    weight: float = Field(1.0, gt=0, description="Relative share of clients with this device.")
    spread_sigma: float = Field(0.0, ge=0, description="Log-normal per-device speed spread.")
    jitter_sigma: float = Field(0.0, ge=0, description="Log-normal per-computation jitter.")


class ClientsSpec(_Model):
    n_clients: int = Field(gt=0)
    drop: _KindSpec = Field(default_factory=lambda: _KindSpec(kind="in_cells"))
    groups: list[GroupSpec] = Field(
        default_factory=lambda: [GroupSpec(name="static")], min_length=1)
    devices: list[DeviceSpec] = Field(
        default_factory=lambda: [DeviceSpec(name="phone", flops=2e10)], min_length=1)
    tx_power_dbm: float = Field(23.0, description="UE transmit power, dBm.")
    dropout_prob: float = Field(0.0, ge=0, le=1, description="Per-round drop-out probability.")
    dropout_window_s: float | None = Field(
        None, gt=0, description="Drop-outs happen uniformly in this window (default deadline_s).")


# ----------------------------------------------------------------------------- wired side
class NodeSpec(_Model):
    name: str
    kind: Literal["site", "edge", "cloud"]


class EdgeSpec(_Model):
    a: str
    b: str
    capacity_bps: float = Field(gt=0)
    latency_s: float = Field(ge=0)


class BackhaulSpec(_Model):
    preset: Literal["star", "custom"] = Field(
        "star", description="star: sites -> one edge server 'edge' -> 'cloud'; custom: nodes/edges.")
    site_edge_capacity_bps: float = Field(10e9, gt=0)
    site_edge_latency_s: float = Field(0.5e-3, ge=0)
    edge_cloud_capacity_bps: float = Field(10e9, gt=0)
    edge_cloud_latency_s: float = Field(10e-3, ge=0)
    nodes: list[NodeSpec] = Field(default_factory=list, description="custom: edge/cloud nodes.")
    edges: list[EdgeSpec] = Field(default_factory=list,
                                  description="custom: links; sites are named site0, site1, ...")
    sharing: Literal["fair", "none"] = Field(
        "fair", description="fair: concurrent messages on a link share its capacity (max-min "
        "fair, per direction); none: each message gets every link's full capacity.")

    @model_validator(mode="after")
    def _custom(self):
        if self.preset == "custom" and not self.edges:
            raise ValueError("preset 'custom' needs a non-empty 'edges' list")
        return self


class ServerSpec(_Model):
    placement: Literal["edge", "cloud"] = "edge"
    node: str | None = Field(None, description="Aggregator node name (default: first of its kind).")
    flops: float = Field(1e13, gt=0, description="Server FLOP/s.")
    service: Literal["sequential", "parallel"] = "parallel"
    aggregation_flops_per_update: float = Field(0.0, ge=0)


# ----------------------------------------------------------------------------- fl
class FlSpec(_Model):
    algorithm: str = "surrogate"
    rounds: int = Field(10, gt=0, description="Rounds (sync) or aggregations (async).")
    clients_per_round: int = Field(10, gt=0, description="K (sync) or concurrency (async).")
    selection: _KindSpec = Field(default_factory=lambda: _KindSpec(kind="random"))
    driver: Literal["sync", "async"] = "sync"
    deadline_s: float | None = Field(None, gt=0, description="Round (sync) / task (async) deadline.")
    min_updates: int = Field(1, ge=0, description="Sync: fewer updates -> the round fails.")
    buffer_size: int = Field(1, gt=0, description="Async: aggregate every buffer_size arrivals.")
    max_staleness: int | None = Field(None, ge=0, description="Async: discard older updates.")
    eval_every: int = Field(1, gt=0)
    hierarchical: bool = Field(False, description="Sync: clients -> edge servers -> cloud.")
    capacity_budget_s: float | None = Field(
        None, gt=0, description="Time budget for the sizer's capacity (default: time to deadline).")
    options: dict[str, Any] = Field(default_factory=dict,
                                    description="Validated by the algorithm's own Config.")


# ----------------------------------------------------------------------------- execution
class ExecutionSpec(_Model):
    """Where client updates run (:mod:`sim.execution`). ``backend`` and ``workers`` never
    change the results; ``threads`` is part of the numerics (the same in every backend)."""

    backend: Literal["inline", "process", "ray"] = Field("inline", description=(
        "inline: in this process, when each upload completes; process / ray: workers train "
        "the clients whose uploads are in flight in parallel (algorithms with Send jobs: "
        "fedavg_lora, fedsoda; others run inline). Outputs are identical."))
    workers: int | None = Field(None, ge=1, description=(
        "Worker processes or Ray actors (default: CPU cores // threads, at least 1)."))
    threads: int | None = Field(None, ge=1, description=(
        "Torch threads of every client update, in every backend (default: this process's "
        "torch thread count). Float results depend on it, not on the backend."))


class Scenario(_Model):
    """A fedwave scenario (see scenarios/ for commented examples)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(0, ge=0)
    duration_s: float | None = Field(None, gt=0, description="Stop at this simulated time.")
    network: NetworkSpec
    clients: ClientsSpec
    backhaul: BackhaulSpec = Field(default_factory=BackhaulSpec)
    server: ServerSpec = Field(default_factory=ServerSpec)
    fl: FlSpec = Field(default_factory=FlSpec)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)


# ----------------------------------------------------------------------------- errors
_FIX = {
    "extra_forbidden": "remove it or check the spelling",
    "missing": "add this key",
    "greater_than": "give a larger number",
    "greater_than_equal": "give a larger number",
    "less_than": "give a smaller number",
    "less_than_equal": "give a smaller number",
    "literal_error": "use one of the listed values",
    "union_tag_invalid": "use one of the listed kinds",
    "union_tag_not_found": "add a 'kind' key",
    "int_type": "give an integer",
    "int_parsing": "give an integer",
    "int_from_float": "give a whole number",
    "float_type": "give a number",
    "float_parsing": "give a number",
    "bool_type": "give true or false",
    "bool_parsing": "give true or false",
    "string_type": "give a text value",
    "list_type": "give a list",
    "dict_type": "give a mapping (key: value)",
    "model_type": "give a mapping (key: value)",
    "too_short": "add entries",
    "string_pattern_mismatch": "use letters, digits, '_', '-', '.'",
    "value_error": "fix the value as described",
}


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The pydantic model class reached by ``path`` from ``model`` (None if not a model)."""
    cur: Any = model
    for key in path:
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)):
            return None
        if key.isdigit():
            continue
        field = cur.model_fields.get(key)
        if field is None:
            return None
        cur = _unwrap(field.annotation)
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """The model class inside Optional[...]/list[...]/Annotated[...] (first model in a Union)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (list, tuple, Union) or str(origin) == "types.UnionType":
        for arg in typing.get_args(tp):
            got = _unwrap(arg)
            if isinstance(got, type) and issubclass(got, BaseModel):
                return got
        return None
    return tp


def _clean_loc(loc: tuple, data: Any) -> list[str]:
    """Key path of an error, without pydantic's union tags (walks the input data)."""
    out: list[str] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict):
            if part in cur:
                out.append(str(part))
                cur = cur[part]
            elif isinstance(part, str) and cur.get("kind") == part:
                continue  # discriminated-union tag
            else:
                out.append(str(part))
                cur = None
        elif isinstance(cur, list) and isinstance(part, int):
            out.append(str(part))
            cur = cur[part] if part < len(cur) else None
        else:
            out.append(str(part))
            cur = None
    return out


def _format_error(err: dict, data: Any, prefix: str = "", root: type[BaseModel] = Scenario) -> str:
    path = _clean_loc(tuple(err["loc"]), data)
    key = ".".join(([prefix] if prefix else []) + path) or "(top level)"
    typ = err["type"]
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    fix = _FIX.get(typ, "see `fedwave schema`")
    ctx = err.get("ctx") or {}
    for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if name in ctx:
            fix = f"give a number {op} {ctx[name]}"
    if typ == "literal_error" and "expected" in ctx:
        fix = f"use one of: {ctx['expected']}"
    if typ == "union_tag_invalid" and "expected_tags" in ctx:
        fix = f"use one of the listed kinds: {ctx['expected_tags']}"
    if typ == "extra_forbidden":
        msg = "unknown key"
        parent = _model_at(root, path[:-1])
        if parent is not None:
            fix += f" (allowed here: {', '.join(sorted(parent.model_fields))})"
    elif typ == "missing":
        msg = "required key is missing"
    got = "" if typ == "missing" else f"; got {err.get('input')!r}"
    return f"{key}: {msg}{got}. Fix: {fix}."


def _wrap(exc: ValidationError, data: Any, prefix: str = "",
          root: type[BaseModel] = Scenario) -> list[str]:
    return [_format_error(e, data, prefix, root) for e in exc.errors()]


# ----------------------------------------------------------------------------- plug-ins
def _check_config(cls: type[BaseModel], options: dict, prefix: str, lines: list[str]) -> None:
    try:
        cls(**options)
    except ValidationError as exc:
        lines.extend(_wrap(exc, options, prefix, cls))


def _check_signature(fn: Any, options: dict, prefix: str, lines: list[str],
                     provided: tuple[str, ...] = ()) -> None:
    """Options must be keyword parameters of ``fn`` (a channel constructor or function)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if n not in ("self", "rng") and n not in provided
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in sorted(options):
        if key not in names:
            lines.append(f"{prefix}.{key}: unknown option; got {options[key]!r}. Fix: remove it "
                         f"or use one of: {', '.join(names) or '(none)'}.")


def _check_plugins(scn: Scenario, lines: list[str]) -> None:
    from fl.algorithm import algorithm_names, get_algorithm
    from sim.mac import MAC_POLICIES, mac_names
    from sim.selection import SELECTION_POLICIES, selection_names

    mac = scn.network.mac
    if mac.kind not in MAC_POLICIES:
        lines.append(f"network.mac.kind: unknown MAC policy; got {mac.kind!r}. "
                     f"Fix: use one of: {', '.join(mac_names())}.")
    else:
        _check_config(MAC_POLICIES[mac.kind].Config, mac.options, "network.mac", lines)
    sel = scn.fl.selection
    if sel.kind not in SELECTION_POLICIES:
        lines.append(f"fl.selection.kind: unknown selection policy; got {sel.kind!r}. "
                     f"Fix: use one of: {', '.join(selection_names())}.")
    else:
        _check_config(SELECTION_POLICIES[sel.kind].Config, sel.options, "fl.selection", lines)
    try:
        algo = get_algorithm(scn.fl.algorithm)
    except KeyError:
        lines.append(f"fl.algorithm: unknown algorithm; got {scn.fl.algorithm!r}. "
                     f"Fix: use one of: {', '.join(algorithm_names())}.")
    except NotImplementedError as exc:
        lines.append(f"fl.algorithm: {exc} Fix: pick an available algorithm "
                     f"(e.g. 'surrogate') or install its dependencies.")
    else:
        _check_config(algo.Config, scn.fl.options, "fl.options", lines)
    _check_channel_plugins(scn, lines)
    if scn.execution.backend == "ray":
        from sim.execution import ray_available

        if not ray_available():
            lines.append("execution.backend: 'ray' needs Ray, which is not installed; got 'ray'. "
                         "Fix: pip install 'fedwave[ray]', or set execution.backend: process.")


def _check_channel_plugins(scn: Scenario, lines: list[str]) -> None:
    from sim import radio

    try:
        reg = radio.channel_registries()
    except ImportError as exc:  # the channel package is not importable
        lines.append(f"network: the radio models cannot be loaded ({exc}). Fix: install fedwave "
                     "completely (channel/ is part of it).")
        return
    for prefix, spec, table, provided in (
        ("network.pathloss", scn.network.pathloss, reg["pathloss"], radio.PATHLOSS_PROVIDED),
        ("network.rate", scn.network.rate, reg["rate"], radio.RATE_PROVIDED),
        ("clients.drop", scn.clients.drop, reg["drop"], radio.DROP_PROVIDED),
    ):
        _check_kind(prefix, spec, table, provided, lines)
    for i, g in enumerate(scn.clients.groups):
        _check_kind(f"clients.groups.{i}.mobility", g.mobility, reg["mobility"],
                    radio.mobility_provided(g.mobility.kind), lines)


def _check_kind(prefix, spec, table, provided, lines) -> None:
    if spec.kind not in table:
        lines.append(f"{prefix}.kind: unknown kind; got {spec.kind!r}. "
                     f"Fix: use one of: {', '.join(sorted(table))}.")
    else:
        _check_signature(table[spec.kind], spec.options, prefix, lines, provided)


def _check_cross(scn: Scenario, lines: list[str]) -> None:
    fl, cl = scn.fl, scn.clients
    if fl.clients_per_round > cl.n_clients:
        lines.append(f"fl.clients_per_round: must be <= clients.n_clients ({cl.n_clients}); got "
                     f"{fl.clients_per_round}. Fix: lower fl.clients_per_round or raise "
                     "clients.n_clients.")
    if fl.driver == "sync" and fl.min_updates > fl.clients_per_round and fl.selection.kind != "all":
        lines.append(f"fl.min_updates: must be <= fl.clients_per_round ({fl.clients_per_round}); "
                     f"got {fl.min_updates}. Fix: lower fl.min_updates.")
    if fl.driver == "async" and fl.buffer_size > fl.clients_per_round:
        lines.append(f"fl.buffer_size: must be <= fl.clients_per_round ({fl.clients_per_round}) "
                     f"in async mode; got {fl.buffer_size}. Fix: lower fl.buffer_size.")
    if fl.driver == "async" and fl.hierarchical:
        lines.append("fl.hierarchical: only the sync driver supports hierarchical rounds; got "
                     "true with driver 'async'. Fix: set fl.hierarchical: false or driver: sync.")
    names = [g.name for g in cl.groups]
    if len(set(names)) != len(names):
        lines.append(f"clients.groups: group names must be unique; got {names}. Fix: rename.")
    dev = [d.name for d in cl.devices]
    if len(set(dev)) != len(dev):
        lines.append(f"clients.devices: device names must be unique; got {dev}. Fix: rename.")
    bh = scn.backhaul
    if bh.preset == "custom":
        known = {n.name for n in bh.nodes}
        for i, e in enumerate(bh.edges):
            for end in ("a", "b"):
                v = getattr(e, end)
                if v not in known and not (v.startswith("site") and v[4:].isdigit()):
                    lines.append(f"backhaul.edges.{i}.{end}: unknown node; got {v!r}. Fix: declare "
                                 f"it in backhaul.nodes or use a site name site0, site1, ...")
        kinds = {n.kind for n in bh.nodes}
        if scn.server.placement not in kinds:
            lines.append(f"server.placement: the backhaul has no {scn.server.placement!r} node; "
                         f"got {scn.server.placement!r}. Fix: add one to backhaul.nodes.")
    if scn.server.node is not None:
        known = ({"edge", "cloud"} if bh.preset == "star" else {n.name for n in bh.nodes})
        if scn.server.node not in known:
            lines.append(f"server.node: unknown node; got {scn.server.node!r}. "
                         f"Fix: use one of: {', '.join(sorted(known))}.")


# ----------------------------------------------------------------------------- loading
def parse_set(item: str) -> tuple[list[str], Any]:
    """``"fl.rounds=3"`` -> (['fl', 'rounds'], 3) (the value is YAML-parsed)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ScenarioError([f"--set {item!r}: expected key.path=value. Fix: e.g. --set fl.rounds=3."])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ScenarioError([f"--set {key}: the value {raw!r} is not valid YAML ({exc})."]) from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``--set key.path=value`` items to the raw scenario mapping (in place, returned).

    A key must exist in the file or be a field of the schema at that place (plug-in option
    mappings such as ``network.mac`` or ``fl.options`` accept any key; their own config
    checks it afterwards). List items are addressed by index: ``clients.groups.0.fraction``.
    """
    for item in overrides:
        path, value = parse_set(item)
        full = ".".join(path)
        cur: Any = data
        model: Any = Scenario
        for i, part in enumerate(path):
            last = i == len(path) - 1
            where = ".".join(path[:i]) or "(top level)"
            if isinstance(cur, list):
                if not part.isdigit() or int(part) >= len(cur):
                    raise ScenarioError([f"--set {full}: {where} is a list of {len(cur)} entries; "
                                         f"got index {part!r}. Fix: use an index 0..{len(cur) - 1}."])
                model = model.model if isinstance(model, _ListOf) else None
                if last:
                    cur[int(part)] = value
                else:
                    cur = cur[int(part)]
                continue
            if not isinstance(cur, dict):
                raise ScenarioError([f"--set {full}: {where} is not a mapping (it holds {cur!r}). "
                                     f"Fix: set {where} itself."])
            allowed = _fields_of(model, cur)
            if part not in cur and allowed is not None and part not in allowed:
                known = sorted(set(cur) | allowed)
                raise ScenarioError([f"--set {full}: no key {part!r} under {where}. "
                                     f"Fix: use one of: {', '.join(known)}."])
            if last:
                cur[part] = value
            else:
                nxt = cur.get(part)
                if nxt is None:
                    nxt = cur[part] = {}
                elif isinstance(nxt, str) and _child_model(model, part, {}) is _KindSpec:
                    nxt = cur[part] = {"kind": nxt}  # shorthand `mac: round_robin`
                model = _child_model(model, part, nxt)
                cur = nxt
    return data


class _ListOf:
    """Marker: a list whose items are ``model``."""

    def __init__(self, model: Any) -> None:
        self.model = model


_LAYOUTS = {"single_cell": SingleCellLayout, "hex_grid": HexGridLayout, "explicit": ExplicitLayout}


def _fields_of(model: Any, cur: dict) -> set[str] | None:
    """Keys allowed in the mapping ``cur`` described by ``model`` (None: any key)."""
    if model == "layout":
        model = _LAYOUTS.get(cur.get("kind"))
    if not (isinstance(model, type) and issubclass(model, BaseModel)) or model is _KindSpec:
        return None
    return set(model.model_fields)


def _child_model(model: Any, part: str, value: Any) -> Any:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    field = model.model_fields.get(part)
    if field is None:
        return None
    if model is NetworkSpec and part == "layout":
        return "layout"
    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) is list or (len(args) == 1 and typing.get_origin(args[0]) is list):
        return _ListOf(_unwrap(ann))
    return _unwrap(ann)


def parse_scenario(data: Any, source: str | None = None) -> Scenario:
    """Validate a raw mapping into a :class:`Scenario` (all checks), or raise ScenarioError."""
    if not isinstance(data, dict):
        raise ScenarioError([f"(top level): a scenario must be a mapping of keys; got "
                             f"{type(data).__name__}. Fix: start the file with 'name: ...'."], source)
    try:
        scn = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_wrap(exc, data), source) from None
    lines: list[str] = []
    _check_cross(scn, lines)
    _check_plugins(scn, lines)
    if lines:
        raise ScenarioError(lines, source)
    return scn


def load_scenario(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Scenario:
    """Read, override, validate. Raises :class:`ScenarioError` with one line per problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError([f"{path}: cannot read the file ({exc.__class__.__name__}: {exc}). "
                             "Fix: check the path and permissions."]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError([f"{path}: not valid YAML ({where}{problem}). Fix: check "
                             "indentation and quoting near that line."]) from None
    if data is None:
        data = {}
    if isinstance(data, dict) and overrides:
        apply_overrides(data, list(overrides))
    return parse_scenario(data, str(path))


def dump_scenario(scn: Scenario) -> str:
    """The resolved scenario (defaults filled in) as YAML."""
    return yaml.safe_dump(scn.model_dump(mode="json"), sort_keys=False)

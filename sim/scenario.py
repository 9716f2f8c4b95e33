"""The scenario schema: pydantic models (``extra="forbid"``) loaded from YAML.

``load_scenario(path, overrides)`` reads a file with :func:`load_yaml` (YAML 1.2 numbers,
bounded alias expansion), applies ``--set key.path=value`` overrides, and checks at load
time everything a run checks:

- the schema. Every plug-in field — ``network.layout``, ``clients.drop``,
  ``clients.groups[].mobility``, ``network.pathloss``, ``network.fading``, ``network.rate``,
  ``network.mac``, ``fl.selection``, ``fl.core.algorithm`` with its ``fl.options`` (and the
  partitioners inside them) — is a discriminated union generated from that plug-in point's
  registry (:class:`fl.core.registry.Registry`: per ``kind``, a small typed config and the
  implementation). Pydantic itself checks every option's type and range, refuses NaN and
  infinities, and names the key path; ``Scenario.model_json_schema()`` (``fedwave schema``)
  lists every option of every kind with its type and description;
- rules across keys (K <= n_clients, backhaul nodes, ...) and an algorithm's rules for the
  population (:meth:`fl.lm.specs.AlgorithmConfig.context_problems`);
- the radio side, built as the run builds it (:func:`sim.radio.check_radio`): the path-loss
  model's validity for the carrier and heights, the drop (with the run's random stream),
  each group's mobility, trace files (parsed by the run's parser); and, first, whether the
  run fits in this machine's memory (:func:`sim.resources.memory_problems`);
- the files a run reads: traces, local models and ``.gguf`` files, dataset files (relative
  paths from the working directory, as the run reads them).

Validation imports neither torch nor an algorithm's module. Every problem becomes one line
of a :class:`ScenarioError` naming the key path, the rule, the value received and the fix::

    network.uplink_bandwidth_hz: Input should be greater than or equal to 1000; got -5.0.
    Fix: give a number >= 1000.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from fl.core.algorithm import ALGORITHMS
from fl.core.registry import kind_union_of
from fl.lm.specs import DataSpec, ModelSpec
from fl.core.yamlio import MAX_YAML_NODES, YamlError, safe_load
from sim.mac import MAC
from sim.radio_config import DROPS, FADING, LAYOUTS, MOBILITY, PATHLOSS, RATES
from sim.selection import SELECTION

__all__ = ["Scenario", "ScenarioError", "load_scenario", "parse_scenario", "apply_overrides",
           "parse_set", "load_yaml", "dump_scenario", "MAX_YAML_NODES", "with_algorithm_options",
           "DEFAULT_DROPOUT_WINDOW_S"]

#: Drop-out window, s, when the scenario sets neither ``clients.dropout_window_s`` nor
#: ``fl.deadline_s``: a client that drops out does so uniformly within this long after its
#: task starts (a fixed minute; results of scenarios that rely on it depend on it).
DEFAULT_DROPOUT_WINDOW_S = 60.0


class ScenarioError(ValueError):
    """A scenario problem; ``lines`` holds one message per problem (key path first)."""

    def __init__(self, lines: list[str], source: str | None = None) -> None:
        self.lines = lines
        head = f"Invalid scenario{f' {source}' if source else ''}:"
        super().__init__("\n".join([head] + [f"  - {ln}" for ln in lines]))


# ----------------------------------------------------------------------------- YAML
def load_yaml(text: str, source: str = "<string>") -> Any:
    """Parse YAML the way fedwave reads every file (scenarios, sweep specs, ``--set``):
    :func:`fl.core.yamlio.safe_load` (safe, YAML 1.2 numbers, bounded alias expansion), raising
    :class:`ScenarioError` naming ``source`` (and the line, for syntax errors)."""
    try:
        return safe_load(text, source)
    except YamlError as exc:
        raise ScenarioError([str(exc)]) from None


# ----------------------------------------------------------------------------- base
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _default(union: Any, kind: str):
    """A default factory: the spec of ``kind`` with its own defaults."""
    member = kind_union_of(union).members[kind]
    return lambda: member()


def _renamed_flops(data: Any, where: str) -> Any:
    """``flops`` → ``flops_per_s`` in a device or server mapping: the old name of the rate
    (before 0.2) still loads, with a warning that says how to fix the file; both is an error."""
    if isinstance(data, dict) and "flops" in data:
        if "flops_per_s" in data:
            raise ValueError(f"{where}: both 'flops' and 'flops_per_s' given. Fix: keep "
                             "flops_per_s (FLOP/s; 'flops' is its old name).")
        import warnings

        warnings.warn(f"{where}: 'flops' is the old name of 'flops_per_s' (sustained FLOP/s). "
                      "Fix: rename the key to flops_per_s.", FutureWarning, stacklevel=2)
        data = {("flops_per_s" if k == "flops" else k): v for k, v in data.items()}
    return data


Bandwidth = Annotated[float, Field(ge=1e3, le=1e11)]
Capacity = Annotated[float, Field(gt=0, allow_inf_nan=True)]  # .inf: no bottleneck
TxPowerDbm = Annotated[float, Field(ge=-60, le=60)]

# The plug-in fields: discriminated unions built from the registries (see the docstring).
Layout = LAYOUTS.union(__name__)
Drop = DROPS.union(__name__)
Mobility = MOBILITY.union(__name__)
Pathloss = PATHLOSS.union(__name__)
Fading = FADING.union(__name__, default="rayleigh")
Rate = RATES.union(__name__)
Mac = MAC.union(__name__)
Selection = SELECTION.union(__name__)


# ----------------------------------------------------------------------------- network
class ShadowingSpec(_Model):
    enabled: bool = Field(True, description=(
        "Correlated log-normal shadowing with the path-loss model's sigma and decorrelation."))


class AssociationSpec(_Model):
    hysteresis_db: float = Field(3.0, ge=0, le=30, description="Handover hysteresis, dB.")
    time_to_trigger_s: float = Field(0.0, ge=0, le=3600, description="Handover time to trigger, s.")


class NetworkSpec(_Model):
    layout: Layout = Field(description="Base stations: {kind: single_cell | hex_grid | explicit, ...}.")
    carrier_hz: float = Field(3.5e9, ge=1e8, le=3e11, description=(
        "Carrier frequency, Hz (the path-loss model's own validity range is checked too)."))
    pathloss: Pathloss = Field(default_factory=_default(Pathloss, "uma"), description=(
        "Path-loss model: {kind: uma | umi | rma | inh_office | free_space | log_distance, ...}."))
    fading: Fading = Field(default_factory=_default(Fading, "rayleigh"), description=(
        "Small-scale fading: {kind: none | rayleigh | rician | rician_los, block_s, ...}."))
    shadowing: ShadowingSpec = Field(default_factory=ShadowingSpec, description="Shadowing on/off.")
    noise_figure_db: float = Field(5.0, ge=0, le=30, description="BS (uplink receiver) noise figure, dB.")
    ue_noise_figure_db: float = Field(9.0, ge=0, le=30, description="UE (downlink) noise figure, dB.")
    bs_tx_power_dbm: float = Field(46.0, ge=-30, le=80, description="BS transmit power over the band, dBm.")
    ue_height_m: float = Field(1.5, gt=0, le=1e4, description="UE antenna height, m.")
    uplink_bandwidth_hz: Bandwidth = Field(20e6, description="Uplink band per cell, Hz (>= 1 kHz).")
    downlink_bandwidth_hz: Bandwidth = Field(20e6, description="Downlink band per cell, Hz (>= 1 kHz).")
    mac: Mac = Field(default_factory=_default(Mac, "equal_share"), description=(
        "How a cell's band is shared: {kind: equal_share | round_robin | proportional_fair | max_rate}."))
    rate: Rate = Field(default_factory=_default(Rate, "shannon"), description=(
        "Rate mapping: {kind: shannon, gap_db, max_se_bps_hz, overhead} or {kind: cqi, table, ...}."))
    association: AssociationSpec = Field(default_factory=AssociationSpec, description=(
        "Cell association (max RSRP with hysteresis)."))
    outage_timeout_s: float | None = Field(
        None, gt=0, description="A transfer in outage this long fails (null: wait).")


# ----------------------------------------------------------------------------- clients
class GroupSpec(_Model):
    name: str = Field(min_length=1, description="Group name (unique).")
    fraction: float = Field(1.0, gt=0, le=1e9, description="Share of the clients (normalised).")
    mobility: Mobility = Field(default_factory=_default(Mobility, "static"), description=(
        "How the group moves: {kind: static | random_waypoint | random_direction | gauss_markov "
        "| constant_velocity | trace, ...}."))
    tx_power_dbm: TxPowerDbm | None = Field(None, description="Override clients.tx_power_dbm, dBm.")


class DeviceSpec(_Model):
    name: str = Field(min_length=1, description="Device profile name (unique).")
    flops_per_s: float = Field(gt=0, le=1e18, description="Sustained training FLOP/s.")
    power_w: float = Field(3.0, ge=0, le=1e4, description="Power while computing, W.")
    rx_power_w: float = Field(0.5, ge=0, le=1e4, description="Radio power while receiving, W.")
    weight: float = Field(1.0, gt=0, le=1e9, description="Relative share of clients with this device.")
    spread_sigma: float = Field(0.0, ge=0, le=5, description="Log-normal per-device speed spread.")
    jitter_sigma: float = Field(0.0, ge=0, le=5, description="Log-normal per-computation jitter.")

    @model_validator(mode="before")
    @classmethod
    def _old_name(cls, data: Any) -> Any:
        return _renamed_flops(data, "clients.devices")


class ClientsSpec(_Model):
    n_clients: int = Field(gt=0, le=10_000_000, description="Number of clients.")
    drop: Drop = Field(default_factory=_default(Drop, "in_cells"), description=(
        "Initial positions: {kind: in_cells | uniform_disc | uniform_rectangle | hotspots | "
        "explicit, ...}."))
    groups: list[GroupSpec] = Field(
        default_factory=lambda: [GroupSpec(name="static")], min_length=1,
        description="Client groups (contiguous blocks of clients, by fraction), each with its mobility.")
    devices: list[DeviceSpec] = Field(
        default_factory=lambda: [DeviceSpec(name="phone", flops_per_s=2e10)], min_length=1,
        description="Device profiles (assigned by weight).")
    tx_power_dbm: TxPowerDbm = Field(23.0, description="UE transmit power, dBm.")
    dropout_prob: float = Field(0.0, ge=0, le=1, description="Per-round drop-out probability.")
    dropout_window_s: float | None = Field(
        None, gt=0, description=("Drop-outs happen uniformly in this window after a client's task "
                                 "starts, s (default: fl.deadline_s, else 60 s)."))

    def group_names(self) -> list[str]:
        """Group name of each client: contiguous blocks by (normalised) fraction, largest
        remainder (what the run assigns)."""
        w = np.array([g.fraction for g in self.groups], dtype=np.float64)
        n = self.n_clients
        exact = w / w.sum() * n
        counts = np.floor(exact).astype(int)
        rest = n - counts.sum()
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:rest]] += 1
        out: list[str] = []
        for g, c in zip(self.groups, counts):
            out.extend([g.name] * int(c))
        return out


# ----------------------------------------------------------------------------- wired side
class NodeSpec(_Model):
    name: str = Field(min_length=1, description="Node name.")
    kind: Literal["site", "edge", "cloud"] = Field(description="site, edge (server) or cloud.")


class EdgeSpec(_Model):
    a: str = Field(description="One end (a node name, or site0, site1, ...).")
    b: str = Field(description="The other end.")
    capacity_bps: Capacity = Field(description="Link capacity, bit/s (.inf: no bottleneck).")
    latency_s: float = Field(ge=0, le=3600, description="One-way latency, s.")


class BackhaulSpec(_Model):
    preset: Literal["star", "custom"] = Field(
        "star", description="star: sites -> one edge server 'edge' -> 'cloud'; custom: nodes/edges.")
    site_edge_capacity_bps: Capacity = Field(10e9, description="star: site-edge capacity, bit/s.")
    site_edge_latency_s: float = Field(0.5e-3, ge=0, le=3600, description="star: site-edge latency, s.")
    edge_cloud_capacity_bps: Capacity = Field(10e9, description="star: edge-cloud capacity, bit/s.")
    edge_cloud_latency_s: float = Field(10e-3, ge=0, le=3600, description="star: edge-cloud latency, s.")
    nodes: list[NodeSpec] = Field(default_factory=list, description="custom: edge/cloud nodes.")
    edges: list[EdgeSpec] = Field(default_factory=list,
                                  description="custom: links; sites are named site0, site1, ...")
    sharing: Literal["fair", "none"] = Field(
        "fair", description="fair: concurrent messages on a link share its capacity (max-min "
        "fair, per direction); none: each message gets every link's full capacity.")

    @model_validator(mode="after")
    def _custom(self):
        if self.preset == "custom" and not self.edges:
            raise ValueError("preset 'custom' needs a non-empty 'edges' list. Fix: list the "
                             "links in backhaul.edges, or use preset: star")
        return self


class ServerSpec(_Model):
    placement: Literal["edge", "cloud"] = Field("edge", description="Where the aggregator runs.")
    node: str | None = Field(None, description="Aggregator node name (default: first of its kind).")
    flops_per_s: float = Field(1e13, gt=0, le=1e21, description="Server FLOP/s.")
    service: Literal["sequential", "parallel"] = Field(
        "parallel", description="Server compute: one job at a time (FIFO) or all in parallel.")
    aggregation_flops_per_update: float = Field(0.0, ge=0, le=1e21, description=(
        "Server FLOPs to aggregate one update."))

    @model_validator(mode="before")
    @classmethod
    def _old_name(cls, data: Any) -> Any:
        return _renamed_flops(data, "server")


# ----------------------------------------------------------------------------- fl
class FlBase(_Model):
    """What every ``fl`` section has; the generated ``Fl<Algorithm>`` specs add
    ``algorithm`` and the algorithm's own ``options``."""

    rounds: int = Field(10, gt=0, description="Rounds (sync) or aggregations (async).")
    clients_per_round: int = Field(10, gt=0, description="K (sync) or concurrency (async).")
    selection: Selection = Field(default_factory=_default(Selection, "random"), description=(
        "Client selection: {kind: all | random | best_rate | deadline_aware | fair, ...}."))
    driver: Literal["sync", "async"] = Field("sync", description="Synchronous or asynchronous rounds.")
    deadline_s: float | None = Field(None, gt=0, description="Round (sync) / task (async) deadline, s.")
    min_updates: int = Field(1, ge=0, description="Sync: fewer updates -> the round fails.")
    buffer_size: int = Field(1, gt=0, description="Async: aggregate every buffer_size arrivals.")
    max_staleness: int | None = Field(None, ge=0, description="Async: discard older updates.")
    eval_every: int = Field(1, gt=0, description="Evaluate every eval_every rounds.")
    hierarchical: bool = Field(False, description="Sync: clients -> edge servers -> cloud.")
    capacity_budget_s: float | None = Field(
        None, gt=0, description="Time budget for the sizer's capacity (default: time to deadline).")
    algorithm_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "Per algorithm name, fl.options keys that replace fl.options's when that algorithm runs "
        "(fl.algorithm, or each algorithm of `fedwave compare`), e.g. {split_lora: {cut_layer: "
        "24}, kd_topk: {lr: 5.0e-3}}: one scenario file for several algorithms. Each entry is "
        "checked against its algorithm's config at load time."))


def _fl_spec(name: str, config: type[BaseModel]) -> type[BaseModel]:
    return create_model(
        "Fl" + "".join(p.capitalize() for p in name.split("_")), __base__=FlBase,
        __module__=__name__, __doc__=f"The ``fl`` section with ``algorithm: {name}``.",
        algorithm=(Literal[name], Field(name, description="The FL algorithm (fl.options are its options).")),
        options=(config, Field(default_factory=config, description=(
            f"Options of {name}, checked by its config ({config.__name__})."))))


#: The ``fl`` section: one spec per registered algorithm (``algorithm`` picks it).
FlSpec = ALGORITHMS.union(__name__, key="algorithm", default="surrogate", spec=_fl_spec)


# ----------------------------------------------------------------------------- execution
class ExecutionSpec(_Model):
    """Where and how client updates run (:mod:`sim.execution`). ``backend`` and ``workers``
    never change the results; ``threads``, ``device``, ``dtype`` and ``prefix_cache`` are
    part of the numerics (the same in every backend)."""

    backend: Literal["inline", "process", "ray"] = Field("inline", description=(
        "inline: in this process, when each upload completes; process / ray: workers train "
        "the clients whose uploads are in flight in parallel (algorithms with Send jobs: "
        "fedavg_lora, fedsoda; others run inline). Outputs are identical."))
    workers: int | None = Field(None, ge=1, description=(
        "Worker processes or Ray actors (default: CPU cores // threads, at least 1)."))
    threads: int | None = Field(None, ge=1, description=(
        "Torch threads of every client update, in every backend (default: this process's "
        "torch thread count). Float results depend on it, not on the backend."))
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$", description=(
        "Where the real learners compute: auto (a GPU when present, else the CPU), cpu, "
        "cuda, cuda:N or mps. Part of the numerics."))
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description=(
        "Compute precision of forward passes: float32, or bfloat16/float16 under autocast "
        "(adapters, optimiser states and losses stay float32). Part of the numerics."))
    prefix_cache: bool = Field(True, description=(
        "Compute the hidden states below the lowest layer with adapters (fl.options.lora."
        "layers) once per example and reuse them in every step, round, client and "
        "evaluation. Equal to the uncached model to float rounding; part of the numerics."))
    batch_clients: bool = Field(False, description=(
        "Inline backend: train the clients whose uploads are in flight together, as one "
        "batched forward/backward over the shared frozen base with per-client LoRA (equal "
        "to training each alone to float rounding; needs lora.dropout 0). Pays on a GPU; "
        "on a small CPU it measured no faster. Part of the numerics."))
    prefix_cache_mb: int = Field(2048, ge=0, le=1 << 20, description=(
        "The most memory the prefix cache may take, MiB (beyond it, states are computed "
        "for the batch at hand and not kept)."))

    def runtime(self):
        """The :class:`fl.core.algorithm.Runtime` the learners get."""
        from fl.core.algorithm import Runtime

        return Runtime(device=self.device, dtype=self.dtype, prefix_cache=self.prefix_cache,
                       prefix_cache_mb=self.prefix_cache_mb)


# ----------------------------------------------------------------------------- outputs
class OutputsSpec(_Model):
    """What the run directory's plots look like (:mod:`sim.plots`). Never changes results."""

    plot_format: Literal["png", "svg", "both"] = Field("png", description=(
        "Format of plots/*: png (raster, plot_dpi), svg (vector, for papers and slides) or "
        "both."))
    plot_dpi: int = Field(150, ge=50, le=600, description="Resolution of PNG plots, dots per inch.")


class Scenario(_Model):
    """A fedwave scenario (see scenarios/ for commented examples)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Scenario name (run directory prefix).")
    seed: int = Field(0, ge=0, description="Root seed of every random stream.")
    duration_s: float | None = Field(None, gt=0, description="Stop at this simulated time, s.")
    network: NetworkSpec = Field(description="Cells, channel and radio resources.")
    clients: ClientsSpec = Field(description="The clients: count, drop, groups, devices.")
    backhaul: BackhaulSpec = Field(default_factory=BackhaulSpec, description="The wired side.")
    server: ServerSpec = Field(default_factory=ServerSpec, description="The aggregator.")
    fl: FlSpec = Field(default_factory=_default(FlSpec, "surrogate"), description=(
        "The federated learning: algorithm, its options, rounds, selection, driver."))
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec, description=(
        "Where client updates run."))
    outputs: OutputsSpec = Field(default_factory=OutputsSpec, description=(
        "How the run directory's plots are drawn (format, resolution)."))


# ----------------------------------------------------------------------------- errors
_FIX = {
    "extra_forbidden": "remove it or check the spelling",
    "missing": "add this key",
    "literal_error": "use one of the listed values",
    "int_type": "give an integer",
    "int_parsing": "give an integer",
    "int_from_float": "give a whole number",
    "float_type": "give a number",
    "float_parsing": "give a number",
    "finite_number": "give a finite number (not .nan or .inf)",
    "bool_type": "give true or false",
    "bool_parsing": "give true or false",
    "string_type": "give a text value",
    "list_type": "give a list",
    "tuple_type": "give a list",
    "dict_type": "give a mapping (key: value)",
    "model_type": "give a mapping (key: value)",
    "model_attributes_type": "give a mapping (key: value)",
    "too_short": "add entries",
    "too_long": "remove entries",
    "string_too_short": "give a non-empty text",
    "string_pattern_mismatch": "use letters, digits, '_', '-', '.'",
}


def _strip(tp: Any) -> Any:
    """``tp`` without ``Annotated``/``Optional`` wrappers (a registry union is kept whole)."""
    while kind_union_of(tp) is None:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        break
    return tp


def _ann(field) -> Any:
    """A field's type with its ``Annotated`` metadata (pydantic keeps it apart)."""
    return Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _model_of(tp: Any, raw: Any) -> type[BaseModel] | None:
    """The model class that validates the raw value ``raw`` of a field typed ``tp`` (None:
    not a model, or a kind that is not registered)."""
    tp = _strip(tp)
    info = kind_union_of(tp)
    if info is not None:
        return info.member(raw)
    if _is_model(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        members = [a for a in typing.get_args(_strip(tp)) if _is_model(a)]
        kind = raw.get("kind") if isinstance(raw, dict) else None
        for m in members:
            f = m.model_fields.get("kind")
            if f is not None and f.default == kind:
                return m
        return members[0] if members else None
    return None


def _item_type(tp: Any) -> Any:
    tp = _strip(tp)
    if typing.get_origin(tp) in (list, tuple):
        args = typing.get_args(tp)
        return args[0] if args else None
    return None


def _model_at(path: list[str], data: Any) -> type[BaseModel] | None:
    """The model class of the mapping at key path ``path`` of the raw scenario ``data``."""
    tp: Any = Scenario
    cur = data
    for key in path:
        if isinstance(cur, list):
            tp = _item_type(tp)
            cur = cur[int(key)] if key.isdigit() and int(key) < len(cur) else None
            continue
        model = _model_of(tp, cur)
        if model is None or key not in model.model_fields:
            return None
        tp = _ann(model.model_fields[key])
        cur = cur.get(key) if isinstance(cur, dict) else None
    return _model_of(tp, cur)


def _clean_loc(loc: tuple, data: Any, missing: bool) -> list[str]:
    """The YAML key path of an error: pydantic's location without its union tags (the
    ``kind`` a discriminated union picked, the member type of a plain union)."""
    out: list[str] = []
    cur = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(cur, dict) and part in cur:
            out.append(str(part))
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int):
            out.append(str(part))
            cur = cur[part] if part < len(cur) else None
        elif last and (missing or isinstance(cur, dict)):
            out.append(str(part))  # a missing key
        # else: a union tag or member label (the raw value has no such key)
    return out


def _format_error(err: dict, data: Any) -> str:
    typ = err["type"]
    ctx = err.get("ctx") or {}
    path = _clean_loc(tuple(err["loc"]), data, typ in ("missing", "missing_kind"))
    key = ".".join(path) or "(top level)"
    msg = err["msg"]
    got = f"; got {err.get('input')!r}"
    if typ == "unknown_kind":
        return (f"{key}.{ctx['key']}: unknown {ctx['what']}; got {ctx['kind']!r}. "
                f"Fix: use one of: {ctx['known']}.")
    if typ == "missing_kind":
        return (f"{key}.{ctx['key']}: required key is missing. Fix: add {ctx['key']}: one of "
                f"{ctx['known']}.")
    if typ == "value_error":
        rule, _, fix = msg.removeprefix("Value error, ").partition(" Fix: ")
        rule = rule.strip().rstrip(".").removeprefix(f"{path[-1]} " if path else "")
        if "Got " in rule or "got " in rule or isinstance(err.get("input"), dict):
            got = ""
        return f"{key}: {rule}{got}. Fix: {fix.strip().rstrip('.') or 'see `fedwave schema`'}."
    fix = _FIX.get(typ, "see `fedwave schema` for what this key accepts")
    for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if name in ctx:
            v = ctx[name]
            fix = f"give a number {op} {v:g}" if isinstance(v, (int, float)) else f"give a number {op} {v}"
    if "min_length" in ctx and typ == "too_short":
        n = ctx["min_length"]
        fix = f"give at least {n} {'entry' if n == 1 else 'entries'}"
    if "max_length" in ctx and typ == "too_long":
        n = ctx["max_length"]
        fix = f"give at most {n} {'entry' if n == 1 else 'entries'}"
    if typ == "literal_error" and "expected" in ctx:
        fix = f"use one of: {ctx['expected']}"
    if typ == "extra_forbidden":
        msg = "unknown key"
        parent = _model_at(path[:-1], data)
        if parent is not None:
            fix += f" (allowed here: {', '.join(sorted(parent.model_fields))})"
    elif typ == "missing":
        msg = "required key is missing"
        got = ""
    return f"{key}: {msg}{got}. Fix: {fix}."


_TYPE_ERRORS = {"list_type", "tuple_type", "float_type", "int_type", "string_type", "dict_type",
                "model_type", "bool_type", "literal_error", "int_parsing", "float_parsing"}


def _wrap(exc: ValidationError, data: Any) -> list[str]:
    errors = exc.errors()
    # A plain union (`radius_m: 5` or `[5, 8]`) reports an error per member: where one member
    # took the value and found a problem, the other members' "not a list" add nothing.
    keys = [tuple(_clean_loc(tuple(e["loc"]), data, e["type"] == "missing")) for e in errors]
    substantive = {k for k, e in zip(keys, errors) if e["type"] not in _TYPE_ERRORS}
    lines: list[str] = []
    for k, e in zip(keys, errors):
        if e["type"] in _TYPE_ERRORS and any(s[:len(k)] == k for s in substantive):
            continue
        line = _format_error(e, data)
        if line not in lines:
            lines.append(line)
    return lines


# ----------------------------------------------------------------------------- checks
def _check_cross(scn: Scenario, lines: list[str]) -> None:
    fl, cl = scn.fl, scn.clients
    if scn.execution.batch_clients and scn.execution.backend != "inline":
        lines.append(f"execution.batch_clients: batches the clients inline only; got backend "
                     f"{scn.execution.backend!r}. Fix: set execution.backend: inline, or "
                     "execution.batch_clients: false.")
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


def _context_lines(options, n_clients: int, prefix: str) -> list[str]:
    out = []
    for problem in options.context_problems(n_clients):
        key, _, rest = problem.partition(": ")
        rule, _, fix = rest.partition(" Fix: ")
        out.append(f"{prefix}{key}: {rule.strip().rstrip('.')}. Fix: {fix.strip().rstrip('.')}.")
    return out


def _check_algorithm_options(scn: Scenario, lines: list[str]) -> None:
    """Each ``fl.algorithm_options`` entry, merged over the fl.options keys its algorithm
    accepts, must be a valid config of that algorithm (what ``fedwave compare`` will run)."""
    from fl.core.algorithm import algorithm_config, algorithm_names

    given = scn.fl.options.model_dump(exclude_unset=True)
    for name, entry in scn.fl.algorithm_options.items():
        where = f"fl.algorithm_options.{name}"
        if name not in algorithm_names():
            lines.append(f"{where}: unknown algorithm; got {name!r}. Fix: use one of: "
                         f"{', '.join(algorithm_names())}.")
            continue
        try:
            config = algorithm_config(name)
        except NotImplementedError as exc:
            lines.append(f"{where}: {exc}")
            continue
        merged = {**{k: v for k, v in given.items() if k in config.model_fields}, **entry}
        try:
            options = config.model_validate(merged)
        except ValidationError as exc:
            for e in exc.errors():
                key = ".".join(str(p) for p in e["loc"])
                if e["type"] == "extra_forbidden":
                    lines.append(f"{where}.{key}: unknown option of {name}; got {e['input']!r}. Fix: "
                                 f"remove it or check the spelling (allowed: "
                                 f"{', '.join(sorted(config.model_fields))}).")
                else:
                    line = _format_error(e, merged).removeprefix("(top level): ")
                    lines.append(f"{where} (over fl.options): {line}")
            continue
        lines.extend(_context_lines(options, scn.clients.n_clients, f"{where} (over fl.options): "))


def _check_algorithm(scn: Scenario, lines: list[str]) -> None:
    """The algorithm's own rules for this population (what building it would check), and
    those of every ``fl.algorithm_options`` entry."""
    lines.extend(_context_lines(scn.fl.options, scn.clients.n_clients, "fl.options."))
    _check_algorithm_options(scn, lines)
    if scn.execution.backend == "ray":
        from sim.execution import ray_available

        if not ray_available():
            lines.append("execution.backend: 'ray' needs Ray, which is not installed; got 'ray'. "
                         "Fix: pip install 'fedwave[ray]', or set execution.backend: process.")


def _specs_in(model: BaseModel, prefix: str):
    """(key path, nested config) of every pydantic model inside ``model``, itself included."""
    yield prefix, model
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _specs_in(value, f"{prefix}.{name}")


def _check_files(scn: Scenario, lines: list[str]) -> None:
    """Files a run reads, from the working directory as the run reads them (trace files are
    checked with the radio, :func:`sim.radio.check_radio`)."""
    for key, spec in _specs_in(scn.fl.options, "fl.options"):
        if isinstance(spec, ModelSpec):
            _check_model_path(f"{key}.name_or_path", spec.name_or_path, lines)
        elif isinstance(spec, DataSpec):
            check_dataset(f"{key}.dataset", spec, lines)


def _check_model_path(key: str, name: str, lines: list[str]) -> None:
    """A local model directory or .gguf file must exist; ``smollm2`` and Hugging Face ids
    (looked up in the local cache when the model loads) are not files."""
    if name.lower() == "smollm2":
        return
    path = Path(name).expanduser()
    local = path.suffix == ".gguf" or name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
    if local and not path.exists():
        what = "GGUF file" if path.suffix == ".gguf" else "model directory"
        lines.append(f"{key}: no such {what}; got {name!r} (looked for {path.absolute()}). Fix: "
                     "give an existing path (relative paths start at the working directory), "
                     "a cached Hugging Face id, or smollm2.")
    elif path.suffix == ".gguf" and not path.is_file():
        lines.append(f"{key}: a .gguf model must be a file; got {name!r}. Fix: name the .gguf file.")


def check_dataset(key: str, spec: DataSpec, lines: list[str]) -> None:
    """The one place dataset files are checked at load time (``fl.options.data.dataset``):
    that a named file or directory exists (relative paths from the working directory), then
    its rows (:func:`fl.lm.data.check_data`, torch-free: file and line of each malformed row)."""
    if spec.dataset != "fortunes":
        path = Path(spec.dataset).expanduser()
        if not path.exists():
            lines.append(f"{key}: no such file or directory; got {spec.dataset!r} (looked for "
                         f"{path.absolute()}). Fix: give an existing .jsonl/.csv file or Hugging "
                         "Face datasets directory (relative paths start at the working "
                         "directory), or fortunes.")
            return
    from fl.lm.data import check_data

    lines.extend(f"{key}: {problem}" for problem in check_data(spec))


def _check_radio(scn: Scenario, lines: list[str]) -> None:
    """The radio side, built as the run builds it — unless the run would not start here for
    want of memory (what :class:`sim.simulation.Simulation` checks first)."""
    from sim.radio import check_radio
    from sim.resources import memory_problems

    memory = memory_problems(scn)
    lines.extend(memory if memory else check_radio(scn))


# ----------------------------------------------------------------------------- loading
def parse_set(item: str) -> tuple[list[str], Any]:
    """``"fl.rounds=3"`` -> (['fl', 'rounds'], 3) (the value is YAML-parsed)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ScenarioError([f"--set {item!r}: expected key.path=value. Fix: e.g. --set fl.rounds=3."])
    try:
        value = load_yaml(raw, f"--set {key.strip()}") if raw.strip() else None
    except ScenarioError as exc:
        raise ScenarioError([f"--set {key}: the value {raw!r} is not valid YAML ({exc.lines[0]})."]) from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``--set key.path=value`` items to the raw scenario mapping (in place, returned).

    A key must exist in the file or be a field of the schema at that place; plug-in options
    are fields of the kind named at that place (``--set network.rate.gap_db=2``, ``--set
    fl.options.local_steps=3``). A plug-in mapping missing from the file starts as its
    default kind; a shorthand (``mac: round_robin``) becomes ``{kind: round_robin}``. List
    items are addressed by index: ``clients.groups.0.fraction``.
    """
    for item in overrides:
        path, value = parse_set(item)
        full = ".".join(path)
        cur: Any = data
        tp: Any = Scenario
        for i, part in enumerate(path):
            last = i == len(path) - 1
            where = ".".join(path[:i]) or "(top level)"
            if isinstance(cur, list):
                if not part.isdigit() or int(part) >= len(cur):
                    raise ScenarioError([f"--set {full}: {where} is a list of {len(cur)} entries; "
                                         f"got index {part!r}. Fix: use an index 0..{len(cur) - 1}."])
                tp = _item_type(tp)
                if last:
                    cur[int(part)] = value
                else:
                    cur = cur[int(part)]
                continue
            if not isinstance(cur, dict):
                raise ScenarioError([f"--set {full}: {where} is not a mapping (it holds {cur!r}). "
                                     f"Fix: set {where} itself."])
            model = _model_of(tp, cur)
            if part not in cur and model is not None and part not in model.model_fields:
                known = sorted(set(cur) | set(model.model_fields))
                raise ScenarioError([f"--set {full}: no key {part!r} under {where}. "
                                     f"Fix: use one of: {', '.join(known)}."])
            if last:
                cur[part] = value
                continue
            field = model.model_fields.get(part) if model is not None else None
            tp = _ann(field) if field is not None else None
            info = kind_union_of(_strip(tp)) if tp is not None else None
            nxt = cur.get(part)
            if nxt is None:
                nxt = cur[part] = {}
                if info is not None and field.default_factory is not None:
                    nxt[info.key] = getattr(field.default_factory(), info.key)
            elif isinstance(nxt, str) and info is not None and info.key == "kind":
                nxt = cur[part] = {"kind": nxt}  # shorthand `mac: round_robin`
            cur = nxt
    return data


def with_algorithm_options(data: dict) -> dict:
    """``data`` (a raw scenario mapping) with ``fl.algorithm_options[fl.algorithm]`` merged
    into ``fl.options`` (each of its keys replaces fl.options's); a copy when it changes.
    Merging twice changes nothing, so a resolved scenario loads to itself."""
    fl = data.get("fl")
    if not isinstance(fl, dict) or not isinstance(fl.get("algorithm_options"), dict):
        return data
    entry = fl["algorithm_options"].get(fl.get("algorithm", "surrogate"))
    if not isinstance(entry, dict) or not entry:
        return data
    options = fl.get("options")
    options = dict(options) if isinstance(options, dict) else {}
    return {**data, "fl": {**fl, "options": {**options, **entry}}}


def parse_scenario(data: Any, source: str | None = None) -> Scenario:
    """Validate a raw mapping into a :class:`Scenario` (all checks), or raise ScenarioError."""
    if not isinstance(data, dict):
        raise ScenarioError([f"(top level): a scenario must be a mapping of keys; got "
                             f"{type(data).__name__}. Fix: start the file with 'name: ...'."], source)
    data = with_algorithm_options(data)
    try:
        scn = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_wrap(exc, data), source) from None
    lines: list[str] = []
    _check_cross(scn, lines)
    _check_algorithm(scn, lines)
    _check_files(scn, lines)
    _check_radio(scn, lines)
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
    data = load_yaml(text, str(path))
    if data is None:
        data = {}
    if isinstance(data, dict) and overrides:
        apply_overrides(data, list(overrides))
    return parse_scenario(data, str(path))


def dump_scenario(scn: Scenario) -> str:
    """The resolved scenario (defaults filled in) as YAML."""
    return yaml.safe_dump(scn.model_dump(mode="json"), sort_keys=False)

"""Write network pickles in the layout of EG3D's training loop, without EG3D's code.

EG3D saves `pickle.dump(dict(G=..., D=..., G_ema=..., augment_pipe=..., training_set_kwargs=...))`.
Its networks are `torch_utils.persistence` classes, which reduce to

    torch_utils.persistence._reconstruct_persistent_obj(meta)
    meta = dict(type='class', version=6, module_src=<source text of the defining module>,
                class_name=<class name>, state=<the module's __dict__ incl. _init_args/_init_kwargs>)

while the few non-persistent classes they hold pickle by reference under EG3D's module paths
(NEWOBJ + BUILD of their __dict__), torch.nn classes pickle normally and dnnlib's EasyDict is a
dict subclass. This writer reproduces exactly that for one of our modules, so tests can build a
"real" pickle in CI where EG3D is not installed. `module_src` can carry a payload that writes a
marker file when executed, which lets a test prove that a loader never ran it.
"""
from __future__ import annotations

import copy
import copyreg
import pickle
from pathlib import Path

import torch

PERSISTENCE_VERSION = 6  # torch_utils.persistence._version in EG3D
EASYDICT_INIT_KWARGS = ("mapping_kwargs", "sr_kwargs")  # EasyDicts in EG3D's train.py config

# Our classes that EG3D does not decorate as persistent: they pickle as references to EG3D's modules.
EG3D_BY_REFERENCE = {
    "OSGDecoder": "training.triplane",
    "ImportanceRenderer": "training.volumetric_rendering.renderer",
    "RaySampler": "training.volumetric_rendering.ray_sampler",
    "MipRayMarcher2": "training.volumetric_rendering.ray_marcher",
}


class _GlobalName:
    """A class standing in for a global of EG3D's code base that does not exist here."""

    registry: dict = {}

    @classmethod
    def get(cls, module: str, name: str) -> type:
        key = (module, name)
        if key not in cls.registry:
            cls.registry[key] = type(name, (), {"__module__": module, "__qualname__": name})
        return cls.registry[key]

    @classmethod
    def lookup(cls, obj):
        for key, standin in cls.registry.items():
            if standin is obj:
                return key
        return None


class EasyDictStandIn(dict):
    """Pickles as dnnlib.util.EasyDict (a dict subclass: NEWOBJ then SETITEMS, no BUILD)."""


def payload_module_src(marker_path: str | Path | None = None, class_names=("TriPlaneGenerator",)) -> str:
    """Module source text as persistence embeds it; with a marker path it has a visible payload.

    It defines every persistent class name it is used for, so that EG3D's own (unsafe) loader
    could rebuild the objects, as it can from a real pickle.
    """
    lines = [
        '"""Stand-in for the source of an EG3D module, embedded as torch_utils.persistence does."""',
        "import torch",
    ]
    if marker_path is not None:
        lines.append(f"open({str(marker_path)!r}, 'w').write('module_src was executed')")
    lines += [f"class {name}(torch.nn.Module):\n    pass" for name in sorted(set(class_names))]
    return "\n".join(lines) + "\n"


def persistent_class_names(*networks: torch.nn.Module) -> set:
    """Names of the classes the fixture writes as persistent (not torch.nn, not by reference)."""
    return {
        type(module).__name__
        for network in networks
        for module in network.modules()
        if not type(module).__module__.startswith("torch.") and type(module).__name__ not in EG3D_BY_REFERENCE
    }


class EG3DLayoutPickler(pickle._Pickler):
    """The pure-Python pickler, so that stand-in globals can be written under EG3D's names."""

    def __init__(self, file, module_src: str, root_arguments: dict):
        super().__init__(file, protocol=4)  # EG3D ran on Python >= 3.8, whose default is 4
        self.module_src = module_src
        self.root_arguments = root_arguments  # id(module) -> (init_args, init_kwargs)

    def reducer_override(self, obj):
        if isinstance(obj, EasyDictStandIn):
            return (copyreg.__newobj__, (_GlobalName.get("dnnlib.util", "EasyDict"),), None, None, iter(obj.items()))
        if not isinstance(obj, torch.nn.Module) or type(obj).__module__.startswith("torch."):
            return NotImplemented
        class_name = type(obj).__name__
        state = dict(obj.__dict__)
        if class_name in EG3D_BY_REFERENCE:
            return (copyreg.__newobj__, (_GlobalName.get(EG3D_BY_REFERENCE[class_name], class_name),), state)
        return self._persistent_reduction(obj, class_name, state)

    def _persistent_reduction(self, obj, class_name: str, state: dict):
        init_args, init_kwargs = self.root_arguments.get(id(obj), ((), {}))
        state["_init_args"] = copy.deepcopy(tuple(init_args))
        state["_init_kwargs"] = copy.deepcopy(init_kwargs)
        meta = dict(
            type="class",
            version=PERSISTENCE_VERSION,
            module_src=self.module_src,
            class_name=class_name,
            state=state,
        )
        return (_GlobalName.get("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,), None)

    def save_reduce(self, func, args, state=None, listitems=None, dictitems=None, state_setter=None, *, obj=None):
        # pickle insists that a NEWOBJ class is obj's own class; a stand-in is not, so skip that
        # check and memoize afterwards (the object is on top of the stack after BUILD too).
        standin = func is copyreg.__newobj__ and _GlobalName.lookup(args[0]) is not None
        super().save_reduce(func, args, state, listitems, dictitems, state_setter, obj=None if standin else obj)
        if standin and obj is not None:
            self.memoize(obj)

    def save_global(self, obj, name=None):
        key = _GlobalName.lookup(obj)
        if key is None:
            return super().save_global(obj, name)
        module, qualname = key
        self.save(module)
        self.save(qualname)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def eg3d_init_kwargs(init_kwargs: dict) -> dict:
    """The kwargs as EG3D records them: a plain dict whose sub-configurations are EasyDicts."""
    recorded = copy.deepcopy(init_kwargs)
    for key in EASYDICT_INIT_KWARGS:
        if isinstance(recorded.get(key), dict):
            recorded[key] = EasyDictStandIn(recorded[key])
    return recorded


def snapshot_copy(module: torch.nn.Module) -> torch.nn.Module:
    """What the training loop pickles: copy.deepcopy(module).eval().requires_grad_(False).cpu()."""
    return copy.deepcopy(module).eval().requires_grad_(False).cpu()


def write_eg3d_pickle(
    path,
    G_ema: torch.nn.Module,
    init_kwargs: dict,
    *,
    init_args: tuple = (),
    G: torch.nn.Module | None = None,
    payload_marker: str | Path | None = None,
    extra_entries: dict | None = None,
) -> Path:
    """Write `path` as EG3D's training loop would snapshot G_ema (and G, default: a copy of G_ema)."""
    path = Path(path)
    G = G_ema if G is None else G
    networks = {"G": snapshot_copy(G), "G_ema": snapshot_copy(G_ema)}
    recorded_kwargs = eg3d_init_kwargs(init_kwargs)
    root_arguments = {id(module): (init_args, recorded_kwargs) for module in networks.values()}
    data = dict(
        training_set_kwargs=dict(
            class_name="training.dataset.ImageFolderDataset",
            path="datasets/fixture.zip",
            use_labels=True,
            max_size=16,
            xflip=False,
            resolution=int(init_kwargs.get("img_resolution", 64)),
            random_seed=0,
        ),
        G=networks["G"],
        D=None,  # the discriminator is never read by the studio
        G_ema=networks["G_ema"],
        augment_pipe=None,
    )
    data.update(extra_entries or {})
    with open(path, "wb") as file:
        module_src = payload_module_src(payload_marker, persistent_class_names(*networks.values()))
        EG3DLayoutPickler(file, module_src, root_arguments).dump(data)
    return path

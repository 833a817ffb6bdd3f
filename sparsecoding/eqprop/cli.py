"""``sparsecoding eqprop`` / ``python -m sparsecoding.eqprop``: the EqProp reference code's arguments.

Training with ``--save`` or ``--save-dir FOLDER`` writes a run folder
(checkpoint.npz, metrics.csv, error_curves.png, args.json); running the same
command again resumes it exactly, and a larger ``--epochs`` (without
``--lr-decay``) continues it. Resuming with a setting that changes the result
(architecture, optimiser, phases, betas, seed, data ...) is refused naming the
option, unless ``--allow-changed-settings``. Ctrl-C checkpoints, writes the
metrics and curves of the epochs done and exits with status 130.
``--todo evaluate --save-dir FOLDER`` reloads the run and prints its test error
with the run's own architecture, task, T1, schedule and tolerance (the folder
alone is enough; an architecture option given with another value is refused).

``--model LCACNN`` puts an LCA sparse-coding layer in front of the network (the
reference code's conventions): ``--channels`` starts with the sparse layer's
features (``--lca_feats``, 64 in ``--channels 64 256 512``) followed by the conv
layers; ``--kernels``, ``--strides``, ``--paddings``, ``--pools``, ``--lrs`` and
``--wds`` have the sparse layer's slot first (its pool must be ``i``; its geometry is
``--lca_ksize``/``--lca_stride`` with "same" padding, and its dictionary steps with
``--lca_eta``, so the other slot-0 values are not used) and then one entry per conv
layer (``--lrs``/``--wds``: per synapse); entries beyond those are ignored, with a
note. ``--dict_training pretrained`` (frozen) and ``finetune`` read the dictionary
file ``--lca_dict`` (default ``runs/lca-dict/dictionary.npy``, what ``sparsecoding lca
learn`` writes by default); ``learn`` starts from a random one. The sparse layer runs
the LCA dynamics for ``--lca_iters`` steps (``--lca_solver lca``, the reference
code's; ``fista`` reaches the same code in fewer iterations, ``--lca_tol`` stops early).
``--scale_feedback`` couples the first conv layer back into the LCA potentials (0:
feed-forward front end). The run folder adds ``lca_dictionary.png`` and
``dictionary.npy`` (the dictionary after training), and ``metrics.csv`` the
fraction of active LCA units per epoch (``lca_active``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from ..cliutil import (CLIError, HelpFormatter, device_backend, finite_float, nonnegative_float, nonnegative_int,
                       one_line_errors, positive_float, positive_int, run_command, writable_dir)
from .network import ACTIVATIONS

N_CLASSES = {"DIGITS": 10, "MNIST": 10, "CIFAR10": 10}
# options of the LCA front end (--model LCACNN), refused with the other models
LCA_OPTIONS = ("lca_feats", "lca_lambda", "lca_tau", "lca_eta", "lca_iters", "lca_stride", "lca_ksize",
               "lca_solver", "lca_tol", "scale_feedback", "dict_training", "lca_dict")
LCA_DEFAULTS = {"lca_lambda": 0.25, "lca_tau": 100.0, "lca_eta": 0.01, "lca_iters": 600, "lca_stride": 2,
                "lca_ksize": 9, "lca_solver": "lca", "scale_feedback": 0.0}
DEFAULT_DICT = os.path.join("runs", "lca-dict", "dictionary.npy")
# stored settings that make up the architecture (checked by --todo evaluate)
ARCHITECTURE = ("--model", "--task", "--channels", "--kernels", "--strides", "--paddings", "--pools", "--fc", "--act",
                "--loss", "--softmax", "--lca_feats", "--lca_lambda", "--lca_tau", "--lca_iters", "--lca_stride",
                "--lca_ksize", "--lca_solver", "--lca_tol", "--scale_feedback")
DEFAULT_LRS = [0.2, 0.1, 0.04]


def _momentum(text):
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _pools(text):
    if not text or set(text) - set("mai"):
        raise argparse.ArgumentTypeError(f"expected one letter per conv layer among m (max), a (avg), "
                                         f"i (none), got {text!r}")
    return text


def add_arguments(p):
    one_line_errors(p)
    a = p.add_argument
    a("--model", default="CNN", choices=["CNN", "MLP", "LCACNN"],
      help="convolutional or fully connected energy-based network; LCACNN: an LCA sparse-coding layer in front "
           "of the convolutional one")
    a("--task", default="DIGITS", choices=["DIGITS", "MNIST", "CIFAR10"],
      help="DIGITS: scikit-learn's bundled 8x8 digits (1400 train / 397 test); MNIST, CIFAR10: read from --data-dir")
    a("--data-dir", default=None,
      help="folder with the MNIST IDX / CIFAR-10 python files (nothing is downloaded; default: none)")
    a("--n-train", type=positive_int, default=None, metavar="N", help="train on the first N training samples (default all)")
    a("--n-test", type=positive_int, default=None, metavar="N", help="test on the first N test samples (default all)")
    a("--data-aug", action="store_true", help="random crop (padding W/8) and horizontal flip of the training images")
    a("--channels", type=positive_int, nargs="+", default=[16, 32],
      help="output channels of the conv layers (the input channels are added)")
    a("--kernels", type=positive_int, nargs="+", default=[3, 3], help="kernel size per conv layer")
    a("--pools", type=_pools, default="mm", help="pool per conv layer: m (2x2 max), a (2x2 average), i (none)")
    a("--strides", type=positive_int, nargs="+", default=[1, 1], help="stride per conv layer")
    a("--paddings", type=nonnegative_int, nargs="+", default=[1, 1], help="zero padding per conv layer")
    a("--fc", type=positive_int, nargs="+", default=[10],
      help="fully connected sizes; the last one is the number of classes")
    a("--optim", default="sgd", choices=["sgd", "adam"], help="optimiser")
    a("--lrs", type=nonnegative_float, nargs="+", default=None,
      help="learning rate per synapse (the last value is repeated for the remaining synapses; LCACNN: the sparse "
           "layer's slot first); default: 0.2 0.1 0.04, chosen on DIGITS with the other defaults: 0.1 0.05 0.02 ends "
           "at 22%% test error after 10 epochs, these at 3%%")
    a("--wds", type=nonnegative_float, nargs="+", default=None,
      help="weight decay per synapse (the last value is repeated; default: none)")
    a("--mmt", type=_momentum, default=0.9, help="SGD momentum, in [0, 1)")
    a("--lr-decay", action="store_true", help="cosine decay of the learning rates over --epochs")
    a("--epochs", type=positive_int, default=10, help="number of epochs (a larger value continues a finished run)")
    a("--act", default="my_hard_sig", choices=sorted(ACTIVATIONS), help="activation of the states")
    a("--todo", default="train", choices=["train", "evaluate", "gducheck"],
      help="train; evaluate the run in --save-dir; gducheck: EP updates vs BPTT step by step")
    a("--T1", type=positive_int, default=40, help="steps of the free phase")
    a("--T2", type=positive_int, default=12, help="steps of the nudged phase(s)")
    a("--mbs", type=positive_int, default=32, help="mini-batch size (DIGITS: 32 learns in fewer epochs than 64)")
    a("--alg", default="EP", choices=["EP"], help="learning algorithm (equilibrium propagation)")
    a("--betas", type=finite_float, nargs=2, default=[0.0, 0.5], metavar=("BETA1", "BETA2"),
      help="nudging strengths of the first and second phase")
    a("--random-sign", action="store_true", help="flip the sign of beta2 at random for each batch")
    a("--thirdphase", action="store_true", help="nudge at +beta2 and -beta2 (symmetric estimate)")
    a("--loss", default="mse", choices=["mse", "cel"], help="squared error or cross-entropy")
    a("--softmax", action="store_true", help="the last fc layer is a softmax readout outside the dynamics")
    a("--scale", type=positive_float, default=None,
      help="factor on the default initialisation of the weights (default: 1)")
    a("--save", action="store_true", help="write a run folder, runs/eqprop-<time> (see --save-dir)")
    a("--save-dir", default=None,
      help="run folder; an existing one is resumed (default: none; with --save, runs/eqprop-<time>)")
    a("--checkpoint-every", type=positive_int, default=None, metavar="N",
      help="also checkpoint every N batches (default: at the end of every epoch)")
    a("--allow-changed-settings", action="store_true",
      help="resume a run folder even though settings that change the result differ from the stored ones")
    a("--seed", type=nonnegative_int, default=0, help="seed of the initialisation, sample order and augmentation")
    a("--device", default="cpu", help="cpu, gpu or a GPU index")
    a("--schedule", default="sync", choices=["sync", "async"], help="all layers at once, or odd then even layers")
    a("--tol", type=positive_float, default=None,
      help="stop a phase once the states move less than this (default: none: run --T1 / --T2 steps)")
    lca = "LCA front end (--model LCACNN): "
    d = LCA_DEFAULTS
    a("--lca_feats", type=positive_int, default=None, help=lca + "number of dictionary features (default: the first "
      "--channels entry)")
    a("--lca_lambda", type=nonnegative_float, default=None, help=lca + f"sparsity threshold (default {d['lca_lambda']})")
    a("--lca_tau", type=positive_float, default=None, help=lca + f"time constant (default {d['lca_tau']:g})")
    a("--lca_eta", type=nonnegative_float, default=None,
      help=lca + f"dictionary step size of finetune / learn (default {d['lca_eta']})")
    a("--lca_iters", type=positive_int, default=None, help=lca + f"solver iterations per batch (default {d['lca_iters']})")
    a("--lca_stride", type=positive_int, default=None, help=lca + f"stride of the dictionary (default {d['lca_stride']})")
    a("--lca_ksize", type=positive_int, default=None, help=lca + f"atom size, odd (default {d['lca_ksize']})")
    a("--lca_solver", default=None, choices=["lca", "fista"],
      help=lca + "lca: the reference code's dynamics (default); fista: the same code in fewer iterations")
    a("--lca_tol", type=positive_float, default=None, help=lca + "stop the solver at this relative duality gap "
      "(default: run --lca_iters)")
    a("--lca_dict", default=None, metavar="PATH", help=lca + f"dictionary file (.npy) written by sparsecoding lca "
      f"learn (default {DEFAULT_DICT}; pretrained and finetune)")
    a("--scale_feedback", type=nonnegative_float, default=None,
      help=lca + "scale of the feedback from the first conv layer into the LCA potentials (default 0: feed-forward)")
    a("--dict_training", default=None, choices=["pretrained", "finetune", "learn"],
      help=lca + "frozen, fine-tuned or learned dictionary (default: pretrained when --lca_dict is given, else learn)")
    a("--quiet", action="store_true", help="no progress bar")
    return p


def _adopt_dictionary_geometry(args):
    """The dictionary file's ``dictionary.json`` (written beside it by sparsecoding lca learn) sets
    --lca_feats / --lca_ksize / --lca_stride when they are not given, and refuses different ones: the
    stride cannot be read from the array's shape."""
    path = os.path.join(os.path.dirname(args.lca_dict or DEFAULT_DICT), "dictionary.json")
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise CLIError(f"{path} (beside the dictionary file) cannot be read as JSON ({exc})") from None
    for option in ("lca_feats", "lca_ksize", "lca_stride"):
        stored = meta.get(option)
        if stored is None:
            continue
        given = getattr(args, option)
        if given is None:
            setattr(args, option, int(stored))
        elif int(given) != int(stored):
            raise CLIError(f"--{option} {given}: the dictionary file was learned with --{option} {stored} "
                           f"({path}); leave --{option} out or give {stored}")


def _check_lca_options(args):
    """LCA options only with --model LCACNN; for LCACNN fill the defaults and check the reference layout."""
    if args.model != "LCACNN":
        for name in LCA_OPTIONS:
            if getattr(args, name) is not None:
                raise CLIError(f"--{name} belongs to the LCA front end: it needs --model LCACNN")
        return
    if args.dict_training is None:
        args.dict_training = "pretrained" if args.lca_dict is not None else "learn"
        if args.todo == "train" and args.dict_training == "learn":
            args.notes.append("--dict_training learn: the dictionary starts random (give --lca_dict FILE, written "
                              "by sparsecoding lca learn, to start from a learned one)")
    if args.dict_training != "learn":
        _adopt_dictionary_geometry(args)
    for name, value in LCA_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.lca_feats is None:
        args.lca_feats = args.channels[0]
    if args.channels[0] != args.lca_feats:
        raise CLIError(f"--channels starts with the sparse layer's features for --model LCACNN: "
                       f"{args.channels[0]} != --lca_feats {args.lca_feats}")
    if len(args.channels) < 2:
        raise CLIError("--model LCACNN needs --channels with the sparse layer's features and at least one conv layer "
                       "(e.g. --channels 64 128)")
    if args.lca_ksize % 2 == 0:
        raise CLIError(f"--lca_ksize must be odd (\"same\" padding), got {args.lca_ksize}")
    if args.dict_training == "learn" and args.lca_dict is not None:
        raise CLIError("--dict_training learn starts from a random dictionary: drop --lca_dict, or use finetune")
    if args.pools[0] != "i":
        raise CLIError(f"--pools: the first letter is the sparse layer's slot for --model LCACNN and must be i "
                       f"(the code is not pooled), got {args.pools!r}")
    n = len(args.channels)
    notes = []
    for option in ("kernels", "strides", "paddings", "pools"):
        values = getattr(args, option)
        if len(values) < n:
            raise CLIError(f"--{option} needs {n} values for --model LCACNN (the sparse layer's slot, then one per "
                           f"conv layer, as --channels lists), got {len(values)}")
        if len(values) > n:
            notes.append(f"--{option} {len(values) - n} extra")
        setattr(args, option, values[:n])
    if notes:
        args.notes.append(f"ignoring values beyond the {n} layers of --channels ({', '.join(notes)}); the first "
                          f"entry of each is the sparse layer's slot (its geometry: --lca_ksize, --lca_stride)")


def load_task(args):
    """``(Xtr, ytr, Xte, yte)`` of ``--task`` (full sets; ``--n-train`` / ``--n-test`` are applied by the caller)."""
    from ..data import digits_split, load_cifar10, load_mnist

    if args.task == "DIGITS":
        return digits_split(1400, seed=12345)
    if args.data_dir is None:
        raise CLIError(f"--task {args.task} reads the standard files from --data-dir (nothing is downloaded)")
    load = load_mnist if args.task == "MNIST" else load_cifar10
    Xtr, ytr = load(args.data_dir, train=True)
    Xte, yte = load(args.data_dir, train=False)
    return Xtr, ytr, Xte, yte


def _first(X, y, n, option, what, task):
    if n is None:
        return X, y
    if n > len(X):
        raise CLIError(f"{option} {n}: --task {task} has only {len(X)} {what} samples")
    return X[:n], y[:n]


def _check_network_options(args):
    n_classes = N_CLASSES[args.task]
    if args.fc[-1] != n_classes:
        raise CLIError(f"--fc: the last size must be the number of classes of --task {args.task} ({n_classes}), "
                       f"got {args.fc[-1]}")
    if args.model == "MLP":
        if args.softmax and len(args.fc) < 2:
            raise CLIError("--softmax with --model MLP needs a hidden layer before the readout (e.g. --fc 64 10)")
        return
    if args.model == "LCACNN":
        return  # the per-layer lists were checked with the LCA options
    n_conv = len(args.channels)
    for option, values in (("--kernels", args.kernels), ("--strides", args.strides), ("--paddings", args.paddings),
                           ("--pools", args.pools)):
        if len(values) != n_conv:
            raise CLIError(f"{option} needs one value per conv layer ({n_conv}, as --channels lists), "
                           f"got {len(values)}")


def _load_dictionary(args):
    """The --lca_dict array (pretrained / finetune), or None; one-line errors for a missing or unreadable file."""
    if args.dict_training == "learn":
        return None
    path = args.lca_dict or DEFAULT_DICT
    if not os.path.exists(path):
        raise CLIError(f"--dict_training {args.dict_training} needs the dictionary file --lca_dict; {path} does not "
                       f"exist (write one with: sparsecoding lca learn --task {args.task} --lca_feats {args.lca_feats} "
                       f"--lca_ksize {args.lca_ksize} --lca_stride {args.lca_stride})")
    try:
        D = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 (any failure to read it is the file's fault)
        why = "not a .npy array file" if "pickle" in str(exc) else f"{type(exc).__name__}: {exc}"
        raise CLIError(f"--lca_dict {path} cannot be read as a .npy dictionary ({why})") from None
    if not isinstance(D, np.ndarray) or D.dtype.kind != "f":
        raise CLIError(f"--lca_dict {path} holds no floating-point array (got {getattr(D, 'dtype', type(D))})")
    return D


def build_model(args, in_shape, backend, dictionary=None):
    """The network of the options; ``dictionary`` replaces the --lca_dict file (LCACNN, e.g. from a checkpoint)."""
    from .network import ConvEBM, MLPEBM

    _check_network_options(args)
    if args.model == "LCACNN":
        from .lcacnn import LCACNN

        if in_shape[-1] != in_shape[-2]:
            raise CLIError(f"--model LCACNN needs square images, --task {args.task} has {in_shape}")
        mode = args.dict_training if dictionary is None else "finetune"
        D = _load_dictionary(args) if dictionary is None else dictionary
        try:
            net = LCACNN(in_shape[-1], in_shape[0], args.channels[1:], args.kernels[1:], args.strides[1:],
                         args.paddings[1:], args.pools[1:], args.fc, lca_feats=args.lca_feats,
                         lca_lambda=args.lca_lambda, lca_tau=args.lca_tau, lca_eta=args.lca_eta,
                         lca_iters=args.lca_iters, lca_stride=args.lca_stride, lca_ksize=args.lca_ksize,
                         lca_solver=args.lca_solver, lca_tol=args.lca_tol, dict_training=mode, dictionary=D,
                         scale_feedback=args.scale_feedback, activation=args.act, softmax=args.softmax,
                         loss=args.loss, scale=args.scale, seed=args.seed, backend=backend)
        except ValueError as exc:
            where = f" (--lca_dict {args.lca_dict or DEFAULT_DICT})" if "dictionary" in str(exc) else ""
            raise CLIError(f"--model LCACNN: {exc}{where}") from None
        net.dict_training = args.dict_training
        return net
    try:
        if args.model == "MLP":
            return MLPEBM([int(np.prod(in_shape))] + args.fc, args.act, args.softmax, args.loss, args.scale,
                          args.seed, backend=backend)
        return ConvEBM(in_shape[-1], [in_shape[0]] + args.channels, args.kernels, args.strides, args.paddings,
                       args.pools, args.fc, args.act, args.softmax, args.loss, args.scale, args.seed, backend=backend)
    except ValueError as exc:
        shape = "x".join(map(str, in_shape))
        raise CLIError(f"the network options (--channels --kernels --strides --paddings --pools --fc) do not fit "
                       f"the {shape} inputs of --task {args.task}: {exc}") from None


def cli_settings(args, lrs, wds, n_train, n_test):
    """The settings a run folder stores and compares on resume, keyed by option name."""
    s = {"--model": args.model, "--task": args.task}
    if args.model != "MLP":
        s.update({"--channels": args.channels, "--kernels": args.kernels, "--strides": args.strides,
                  "--paddings": args.paddings, "--pools": args.pools})
    s.update({"--fc": args.fc, "--act": args.act, "--loss": args.loss, "--softmax": args.softmax,
              "--scale": args.scale, "--optim": args.optim, "--lrs": lrs, "--wds": wds, "--mmt": args.mmt,
              "--lr-decay": args.lr_decay, "--T1": args.T1, "--T2": args.T2, "--betas": args.betas,
              "--random-sign": args.random_sign, "--thirdphase": args.thirdphase, "--data-aug": args.data_aug,
              "--mbs": args.mbs, "--seed": args.seed, "--schedule": args.schedule, "--tol": args.tol,
              "--n-train": n_train, "--n-test": n_test})
    if args.model == "LCACNN":
        s.update({f"--{k}": getattr(args, k) for k in LCA_OPTIONS})
        s["--lca_dict"] = os.path.abspath(args.lca_dict or DEFAULT_DICT) if args.dict_training != "learn" else None
    if args.lr_decay:
        s["--epochs"] = args.epochs
    return json.loads(json.dumps(s))


def _evaluate(args, build, Xte, yte, save):
    from .train import evaluate

    ck = os.path.join(save, "checkpoint.npz") if save else None
    if ck is None or not os.path.exists(ck):
        raise CLIError("--todo evaluate needs --save-dir of a trained run" + (f" ({ck} does not exist)" if ck else ""))
    arrays, net_meta, stored, history = _read_run(ck)
    mine = cli_settings(args, None, None, None, None)
    for key in ARCHITECTURE:
        if stored.get(key) != mine.get(key):
            raise CLIError(f"--todo evaluate: the run in {save} was trained with {key} {_text(stored.get(key))}, "
                           f"not {_text(mine.get(key))}; give the run's architecture options")
    # LCACNN: the dictionary comes from the checkpoint (whatever --dict_training and --lca_dict say)
    net = build(arrays.get("lca_weights") if args.model == "LCACNN" else None)
    net.set_state(arrays, net_meta)
    n_test = args.n_test if args.n_test is not None else stored.get("--n-test")
    Xte, yte = _first(Xte, yte, n_test, "--n-test", "test", args.task)
    T1, schedule, tol = stored["--T1"], stored["--schedule"], stored["--tol"]
    err = evaluate(net, Xte, yte, T1, schedule=schedule, tol=tol)
    print(json.dumps({"test_error": err, "n_test": len(Xte), "T1": T1, "schedule": schedule, "tol": tol,
                      "epochs": len(history), "checkpoint": ck}))
    return 0


def _read_run(ck):
    """``load_run(ck)``, any failure to read it as one line."""
    from .train import load_run

    try:
        return load_run(ck)
    except Exception as exc:  # noqa: BLE001 (zip, JSON, npy errors of a damaged file)
        raise CLIError(f"{ck} cannot be read as an EqProp checkpoint ({type(exc).__name__}: {exc}); "
                       f"move it away to start afresh") from None


def _text(value):
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return "(not given)" if value is None else str(value)


def _adopt_run_architecture(args):
    """``--todo evaluate``: the run folder's stored architecture (and task) replace the options, so the folder
    alone is enough; a missing or unreadable checkpoint is reported later by the evaluation."""
    ck = os.path.join(args.save_dir, "checkpoint.npz") if args.save_dir else None
    if ck is None or not os.path.exists(ck):
        return
    stored = _read_run(ck)[2]
    defaults = {a.dest: a.default for a in add_arguments(argparse.ArgumentParser())._actions}
    for key in ("--task", *ARCHITECTURE, *(f"--{k}" for k in LCA_OPTIONS)):
        name = key.lstrip("-").replace("-", "_")
        if key in stored and getattr(args, name) == defaults.get(name):
            # an option left at its default takes the run's value; one given otherwise is compared (and a
            # different value refused) by the evaluation
            setattr(args, name, stored[key])


def run(args):
    from .train import train

    args.notes = []  # printed once the options are all accepted, before training
    if args.todo == "evaluate":
        _adopt_run_architecture(args)
    _check_lca_options(args)
    if args.thirdphase and args.betas[1] == 0:
        raise CLIError("--thirdphase nudges at +BETA2 and -BETA2: --betas needs BETA2 != 0")
    if args.betas[0] == args.betas[1]:
        raise CLIError(f"--betas must differ, got {args.betas[0]:g} {args.betas[1]:g}")
    backend = device_backend(args.device)
    Xtr, ytr, Xte, yte = load_task(args)
    Xtr, ytr = _first(Xtr, ytr, args.n_train, "--n-train", "training", args.task)
    save = args.save_dir or (f"runs/eqprop-{time.strftime('%Y%m%d-%H%M%S')}" if args.save else None)
    if args.todo == "evaluate":
        return _evaluate(args, lambda D: build_model(args, Xtr.shape[1:], backend, D), Xte, yte, save)
    if args.model == "LCACNN" and args.todo == "gducheck":
        raise CLIError("--todo gducheck checks --model CNN and MLP (the LCA front end has no BPTT reference here)")
    net = build_model(args, Xtr.shape[1:], backend)
    n_syn = len(net.params)
    lrs, wds = _per_synapse(args.lrs, args.model, DEFAULT_LRS), _per_synapse(args.wds, args.model, None)
    extra = [f"--{name} {len(v) - n_syn} extra" for name, v in (("lrs", lrs), ("wds", wds))
             if v is not None and len(v) > n_syn and getattr(args, name) is not None]
    if extra:
        args.notes.append(f"ignoring values beyond the {n_syn} synapses ({', '.join(extra)})")
    lrs = (lrs + [lrs[-1]] * n_syn)[:n_syn]
    wds = None if wds is None else (wds + [wds[-1]] * n_syn)[:n_syn]
    for note in args.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.todo == "gducheck":  # the check's own defaults, verdict, exit status 1 on failure: gdu.py
        from .gdu import gducheck_command

        return gducheck_command(args, net, Xtr, ytr, save or "runs/gducheck")
    Xte, yte = _first(Xte, yte, args.n_test, "--n-test", "test", args.task)
    if save:
        writable_dir(save, "--save-dir")
    settings = cli_settings(args, lrs, wds, len(Xtr), len(Xte))
    if save and os.path.exists(os.path.join(save, "checkpoint.npz")):
        _read_run(os.path.join(save, "checkpoint.npz"))
    t0 = time.perf_counter()
    try:
        hist = train(net, Xtr, ytr, Xte, yte, args.epochs, args.mbs, args.T1, args.T2, tuple(args.betas),
                     args.thirdphase, args.random_sign, args.optim, lrs, wds, args.mmt, args.lr_decay, args.data_aug,
                     save, args.seed, args.schedule, args.tol, not args.quiet,
                     args={k: v for k, v in vars(args).items() if k != "func"},
                     checkpoint_every=args.checkpoint_every, allow_changes=args.allow_changed_settings,
                     settings=settings)
    except _settings_changed() as exc:
        raise type(exc)(f"{exc} (--allow-changed-settings)") from None
    except KeyboardInterrupt:  # TrainingInterrupted: the network holds the checkpointed state
        if save and args.model == "LCACNN":
            _write_dictionary(net, save)
        raise
    if save and args.model == "LCACNN":
        _write_dictionary(net, save)
    for h in hist:
        print(json.dumps(h))
    last = hist[-1] if hist else {}
    print((f"test error {last['test_error']:.4f} after {len(hist)} epoch(s); " if "test_error" in last else "")
          + f"total {time.perf_counter() - t0:.1f} s" + (f"; run folder {save}" if save else ""))
    return 0


def _per_synapse(values, model, default):
    """``--lrs`` / ``--wds`` per synapse: LCACNN lists the sparse layer's slot first (not used: the dictionary
    steps with --lca_eta); a single value applies to every synapse."""
    if values is None:
        return None if default is None else list(default)
    if model == "LCACNN" and len(values) > 1:
        return list(values[1:])
    return list(values)


def _write_dictionary(net, folder):
    """The LCACNN run folder's dictionary after training: ``dictionary.npy`` and ``lca_dictionary.png``."""
    from ..backend import to_numpy
    from ..viz import save_dictionary

    D = np.asarray(to_numpy(net.lca.weights), dtype=np.float32)
    tmp = os.path.join(folder, "dictionary.tmp.npy")
    np.save(tmp, D)
    os.replace(tmp, os.path.join(folder, "dictionary.npy"))
    save_dictionary(D, os.path.join(folder, "lca_dictionary.png"), title=f"LCA, {net.dict_training}")


def _settings_changed():
    from ..training import SettingsChanged

    return SettingsChanged


def register(sub):
    """Add the ``eqprop`` subcommand to the top-level parser's subparsers."""
    p = add_arguments(sub.add_parser("eqprop", help="equilibrium propagation training (EqProp reference arguments)",
                                     description=__doc__, formatter_class=HelpFormatter))
    p.set_defaults(func=run)
    return p


def main(argv=None):
    p = add_arguments(argparse.ArgumentParser(prog="sparsecoding eqprop", description=__doc__,
                                              formatter_class=HelpFormatter))
    return run_command("sparsecoding eqprop", run, p.parse_args(sys.argv[1:] if argv is None else argv))

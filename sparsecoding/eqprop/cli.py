"""``sparsecoding eqprop`` / ``python -m sparsecoding.eqprop``: the EqProp reference code's arguments."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from ..cliutil import HelpFormatter, device_backend, run_command


def add_arguments(p):
    a = p.add_argument
    a("--model", default="CNN", choices=["CNN", "MLP", "LCACNN"])
    a("--task", default="DIGITS", choices=["DIGITS", "MNIST", "CIFAR10"])
    a("--data-dir", default=None, help="folder with the MNIST IDX / CIFAR-10 python files (nothing is downloaded)")
    a("--data-aug", action="store_true")
    a("--channels", type=int, nargs="+", default=[16, 32], help="conv output channels (input channels are added)")
    a("--kernels", type=int, nargs="+", default=[3, 3])
    a("--pools", default="mm")
    a("--strides", type=int, nargs="+", default=[1, 1])
    a("--paddings", type=int, nargs="+", default=[1, 1])
    a("--fc", type=int, nargs="+", default=[10])
    a("--optim", default="sgd", choices=["sgd", "adam"])
    a("--lrs", type=float, nargs="+", default=[0.1, 0.05, 0.02])
    a("--wds", type=float, nargs="+", default=None)
    a("--mmt", type=float, default=0.9)
    a("--lr-decay", action="store_true")
    a("--epochs", type=int, default=10)
    a("--act", default="my_hard_sig")
    a("--todo", default="train", choices=["train", "evaluate", "gducheck"])
    a("--T1", type=int, default=40)
    a("--T2", type=int, default=12)
    a("--mbs", type=int, default=64)
    a("--alg", default="EP", choices=["EP"])
    a("--betas", type=float, nargs=2, default=[0.0, 0.5])
    a("--random-sign", action="store_true")
    a("--thirdphase", action="store_true")
    a("--loss", default="mse", choices=["mse", "cel"])
    a("--softmax", action="store_true")
    a("--scale", type=float, default=None)
    a("--save", action="store_true", help="write a run folder (see --save-dir)")
    a("--save-dir", default=None, help="run folder; an existing one is resumed (default runs/eqprop-<time>)")
    a("--seed", type=int, default=0)
    a("--device", default="cpu", help="cpu, gpu or a GPU index")
    a("--schedule", default="sync", choices=["sync", "async"], help="all layers at once, or odd then even layers")
    a("--tol", type=float, default=None, help="stop a phase once the states move less than this")
    for name, typ in (("lca_feats", int), ("lca_lambda", float), ("lca_tau", float), ("lca_eta", float),
                      ("lca_iters", int), ("lca_stride", int), ("lca_ksize", int), ("scale_feedback", float)):
        a(f"--{name}", type=typ, default=None)
    a("--dict_training", default=None, choices=[None, "pretrained", "finetune", "learn"])
    a("--quiet", action="store_true")
    return p


def load_task(args):
    from ..data import digits_split, load_cifar10, load_mnist

    if args.task == "DIGITS":
        return digits_split(1400, seed=12345)
    if args.data_dir is None:
        raise SystemExit(f"--task {args.task} reads the standard files from --data-dir (nothing is downloaded)")
    load = load_mnist if args.task == "MNIST" else load_cifar10
    Xtr, ytr = load(args.data_dir, train=True)
    Xte, yte = load(args.data_dir, train=False)
    return Xtr, ytr, Xte, yte


def build_model(args, in_shape, backend):
    from .network import ConvEBM, MLPEBM

    if args.model == "LCACNN":
        raise SystemExit("--model LCACNN (the LCA front end) is not available yet; use --model CNN")
    if args.model == "MLP":
        return MLPEBM([int(np.prod(in_shape))] + args.fc, args.act, args.softmax, args.loss, args.scale, args.seed,
                      backend=backend)
    return ConvEBM(in_shape[-1], [in_shape[0]] + args.channels, args.kernels, args.strides, args.paddings, args.pools,
                   args.fc, args.act, args.softmax, args.loss, args.scale, args.seed, backend=backend)


def run(args):
    from ..checkpoint import load_checkpoint, unpack_params
    from .train import evaluate, train

    backend = device_backend(args.device)
    Xtr, ytr, Xte, yte = load_task(args)
    net = build_model(args, Xtr.shape[1:], backend)
    n_syn = len(net.params)
    lrs = (args.lrs + [args.lrs[-1]] * n_syn)[:n_syn]
    wds = None if args.wds is None else (args.wds + [args.wds[-1]] * n_syn)[:n_syn]
    save = args.save_dir or (f"runs/eqprop-{time.strftime('%Y%m%d-%H%M%S')}" if args.save else None)
    if args.todo == "evaluate":
        if not save or not os.path.exists(os.path.join(save, "checkpoint.npz")):
            raise SystemExit("--todo evaluate needs --save-dir of a trained run")
        arrays, _ = load_checkpoint(os.path.join(save, "checkpoint.npz"))
        unpack_params(net.params, arrays)
        print(json.dumps({"test_error": evaluate(net, Xte, yte, args.T1, schedule=args.schedule, tol=args.tol)}))
        return 0
    if args.todo == "gducheck":  # the check's own defaults, verdict, exit status 1 on failure: gdu.py
        from .gdu import gducheck_command

        return gducheck_command(args, net, Xtr, ytr, save or "runs/gducheck")
    t0 = time.perf_counter()
    hist = train(net, Xtr, ytr, Xte, yte, args.epochs, args.mbs, args.T1, args.T2, tuple(args.betas), args.thirdphase,
                 args.random_sign, args.optim, lrs, wds, args.mmt, args.lr_decay, args.data_aug, save, args.seed,
                 args.schedule, args.tol, not args.quiet, args=vars(args))
    for h in hist:
        print(json.dumps(h))
    print(f"total {time.perf_counter() - t0:.1f} s" + (f"; run folder {save}" if save else ""))
    return 0


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

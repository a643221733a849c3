"""The continual flags of `dylora-moe train` (`--mode continual --skills ...`), added by training/cli.py."""

from __future__ import annotations

import argparse

from dylora_moe.continual.config import ContinualConfig


def add_continual_args(parser: argparse.ArgumentParser) -> None:
    d = ContinualConfig()
    g = parser.add_argument_group("continual learning (--mode continual)")
    g.add_argument("--mode", choices=("joint", "continual"), default="joint",
                   help="joint: one run over --datasets; continual: learn --skills one after another")
    g.add_argument("--skills", default=d.skills,
                   help="comma-separated dataset specs, one per skill, in order (e.g. stdlib:text,stdlib:math,"
                        "code_alpaca=FILE,mbpp=FILE); join datasets inside one skill with '+'")
    g.add_argument("--novelty_alpha", "--novelty-alpha", type=float, default=d.novelty_alpha,
                   help="a skill is novel (new expert) when a permutation test tells its sample apart from every "
                        "known skill's at this level (the rate at which a known skill is wrongly called novel)")
    g.add_argument("--novelty_samples", "--novelty-samples", type=int, default=d.novelty_samples,
                   help="examples per skill for its embedding and the same-skill test (more: more power)")
    g.add_argument("--novelty_threshold", "--novelty-threshold", type=float, default=d.novelty_threshold,
                   help="decide novelty by this fixed cosine similarity instead of the test (novel below it); "
                        "the default holds only on the base it was tuned for")
    g.add_argument("--seed_steps", "--seed-steps", type=int, default=d.seed_steps,
                   help="steps of the high-LR seeding phase per skill (0: consolidation only)")
    g.add_argument("--seed_learning_rate", "--seed-learning-rate", type=float, default=None,
                   help="learning rate of the seeding phase (default: 10 x --learning_rate)")
    g.add_argument("--train_all_experts", "--train-all-experts", action="store_true",
                   help="do not freeze earlier experts while a skill is learned")
    g.add_argument("--replay", type=float, default=d.replay,
                   help="share of each later skill's training examples replayed from the earlier skills (0: none)")
    g.add_argument("--routing_supervision", "--routing-supervision", type=float, default=d.routing_supervision,
                   help="weight of a router loss toward each training example's skill expert (cross entropy of "
                        "every router's softmax over the example's answer tokens); the gates then learn from these "
                        "labels, not from the LM loss (0: off, the LM loss trains the gates)")
    g.add_argument("--prototype_routing", "--prototype-routing", type=float, default=d.prototype_routing,
                   help="weight of a router loss that keeps each finished skill's recorded gate inputs routed to its "
                        "expert while later skills train (no data replay; 0: off)")
    g.add_argument("--new_expert_init", "--new-expert-init", choices=("nearest", "fresh"), default=d.new_expert_init,
                   help="a novel skill's expert starts as a copy of the most similar known skill's expert "
                        "(nearest) or from scratch (fresh)")
    g.add_argument("--embedding_samples", "--embedding-samples", type=int, default=d.embedding_samples,
                   help="examples per skill for the routing prototypes")
    g.add_argument("--novelty_reference", "--novelty-reference", default=d.reference,
                   help="dataset spec whose mean hidden state centres skill embeddings, or 'none'")


def continual_config_from_args(args: argparse.Namespace) -> ContinualConfig:
    return ContinualConfig(
        skills=args.skills, novelty_alpha=args.novelty_alpha, novelty_threshold=args.novelty_threshold, seed_steps=args.seed_steps,
        seed_learning_rate=args.seed_learning_rate, freeze_experts=not args.train_all_experts,
        replay=args.replay, routing_supervision=args.routing_supervision, prototype_routing=args.prototype_routing,
        embedding_samples=args.embedding_samples, novelty_samples=args.novelty_samples,
        reference=args.novelty_reference, new_expert_init=args.new_expert_init,
    )


def run_continual(args: argparse.Namespace, train_config) -> int:
    from dylora_moe.continual.orchestrator import train_continual

    return train_continual(train_config, continual_config_from_args(args)).exit_code

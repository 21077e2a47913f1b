"""Greedy generation speed: our KV-cached decoder vs HF `generate` and vs our full recomputation.

GPT-2-small shape (12 layers, hidden 768, 12 heads, vocab 50257, 1024 positions) with random weights,
a 16-token prompt, 128 new tokens, greedy, batch 1 and 8, on the current Keras backend:

    KERAS_BACKEND=tensorflow python benchmarks/bench_generate.py      # and jax, torch
    KERAS_BACKEND=jax python benchmarks/bench_generate.py --dtype bfloat16
    KERAS_BACKEND=jax python benchmarks/bench_generate.py --quantize int8   # our model int8, HF float

The random HF `GPT2LMHeadModel` is saved as safetensors first and loaded by both sides, so they run
the same weights; batch-1 greedy tokens are compared. Rows (tokens/s = new tokens x batch / time,
prompt processing included, compilation excluded: every path runs once before it is timed):

- ours, cached, `AutoRegressiveDecoder.greedy` (batch 1): the user API, `CachedPredictor` as `predict`.
- ours, cached, predictor loop (batch 1 and 8): argmax over `predictor(inputs, output_ids, states)`.
- HF `generate(use_cache=True, do_sample=False)`, torch, same dtype.
- ours, full recomputation (`FullPredictor`, the cache off): one forward of the whole prefix per
  token. Timed at a few prefix lengths (each shape warmed up first) and extrapolated to the 128
  steps by linear interpolation of step time over the prefix length, so it is not a measured run.

Ratios: ours-cached / HF and ours-cached / ours-full. Times are medians of `--repeats` runs.

`--model t5`: a T5-base-shaped t5.1.1 model (12 + 12 layers, d_model 768, 12 heads, d_ff 2048 gated-GELU,
vocab 32128, untied head) with random weights, a 64-token source, 64 new tokens: ours is the encoder's
`predict` then the cached decoder (`t5.predictor(max_length)`), HF is `T5ForConditionalGeneration.generate`;
greedy at batch 1 (`AutoRegressiveDecoder.greedy`) and batch 8 (an argmax loop over the predictor), beam
search with 4 beams at batch 1 (`AutoRegressiveDecoder.beam_search`, which takes one input, as bert4keras's
did; HF `num_beams=4`, `length_penalty=1.0`, no early stopping).
"""

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import keras


PROMPT_LEN = 16
NEW_TOKENS = 128
FULL_LENGTHS = (16, 48, 80, 112, 143)  # prefix lengths at which the full path is timed


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gpt2", choices=["gpt2", "t5"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per path (median)")
    p.add_argument("--layers", type=int, default=12, help="fewer for a quick check")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch.set_num_threads for HF (and the torch backend); 0 keeps torch's default")
    p.add_argument("--no-hf", action="store_true", help="skip HF generate")
    p.add_argument("--no-full", action="store_true", help="skip the full-recomputation path")
    p.add_argument("--quantize", choices=["int8", "int4"],
                   help="quantize our model (Keras' Model.quantize) after loading; HF stays float, so the "
                        "token comparison measures how far greedy decoding follows the float model")
    return p.parse_args(argv)


def median_times(fns, repeats):
    """Median seconds of each callable, run in turn `repeats` times (round robin, so that a change
    of load on a shared machine hits every path alike)."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def median_time(fn, repeats):
    return median_times([fn], repeats)[0]


def save_random_gpt2(path, layers):
    """A random GPT-2-small-shaped `GPT2LMHeadModel` saved as safetensors in `path`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=layers, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    GPT2LMHeadModel(config).save_pretrained(path)


def predictor_decoder():
    """An `AutoRegressiveDecoder` subclass whose ``predict`` is a given predictor (logits)."""
    from bert4keras.snippets import AutoRegressiveDecoder

    class PredictorDecoder(AutoRegressiveDecoder):
        def __init__(self, predictor, **kwargs):
            super().__init__(**kwargs)
            self.predictor = predictor

        @AutoRegressiveDecoder.wraps(default_rtype="logits", use_states=True)
        def predict(self, inputs, output_ids, states):
            return self.predictor(inputs, output_ids, states)

    return PredictorDecoder


def build_ours(path):
    from bert4keras.models import build_transformer_model

    gpt2 = build_transformer_model(path, path, model="gpt2", final_activation="linear", return_keras_model=False)
    return gpt2, predictor_decoder()


def predictor_loop(predictor, prompts):
    """Greedy decoding of a batch of equal-length prompts straight over the predictor."""
    output_ids = np.zeros((len(prompts), 0), dtype="int32")
    states = None
    for _ in range(NEW_TOKENS):
        logits, states = predictor([prompts], output_ids, states)
        output_ids = np.concatenate([output_ids, logits.argmax(-1)[:, None].astype("int32")], 1)
    return output_ids


def full_recompute_time(predictor, batch_size, repeats):
    """Extrapolated seconds for NEW_TOKENS full-recomputation steps (see the module docstring)."""
    step_times = []
    for length in FULL_LENGTHS:
        tokens = np.ones((batch_size, length), dtype="int32")
        inputs, outputs = [tokens[:, :PROMPT_LEN]], tokens[:, PROMPT_LEN:]
        predictor(inputs, outputs)  # compile this shape
        step_times.append(median_time(lambda: predictor(inputs, outputs), repeats))
    prefix_lengths = PROMPT_LEN + np.arange(NEW_TOKENS)
    return float(np.interp(prefix_lengths, FULL_LENGTHS, step_times).sum()), step_times


def hf_generate(path, dtype):
    import torch
    from transformers import GPT2LMHeadModel

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    hf = GPT2LMHeadModel.from_pretrained(path, dtype=torch_dtype).eval()

    def generate(prompts):
        with torch.no_grad():
            out = hf.generate(torch.tensor(prompts, dtype=torch.long), attention_mask=torch.ones(prompts.shape, dtype=torch.long),
                              max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1,
                              use_cache=True, pad_token_id=0, eos_token_id=None)
        return out[:, prompts.shape[1]:].numpy()

    return generate


T5_SOURCE_LEN = 64
T5_NEW_TOKENS = 64


def save_random_t5(path, layers):
    """A random T5-base-shaped t5.1.1 `T5ForConditionalGeneration` saved as safetensors in `path`."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=layers, num_decoder_layers=layers,
                      num_heads=12, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    T5ForConditionalGeneration(config).save_pretrained(path)


def main_t5(args):
    """T5 greedy and beam-search decoding speed (see the module docstring)."""
    import torch
    from transformers import T5ForConditionalGeneration

    from bert4keras.models import build_transformer_model

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    max_length = T5_NEW_TOKENS + 1  # the start token and the new tokens
    Decoder = predictor_decoder()

    results = {}
    with tempfile.TemporaryDirectory() as path:
        save_random_t5(path, args.layers)
        t5 = build_transformer_model(path, path, model="t5", with_lm="linear", return_keras_model=False)
        hf = T5ForConditionalGeneration.from_pretrained(path).eval()
        print(f"backend {backend}, T5-base shape (t5.1.1), {args.layers} + {args.layers} layers, "
              f"torch threads {torch.get_num_threads()}", flush=True)

        def hf_generate(source, num_beams):
            with torch.no_grad():
                out = hf.generate(torch.tensor(source, dtype=torch.long), max_new_tokens=T5_NEW_TOKENS,
                                  min_new_tokens=T5_NEW_TOKENS, do_sample=False, num_beams=num_beams,
                                  length_penalty=1.0, early_stopping=False, eos_token_id=None)
            return out.numpy()

        batch_predictor = t5.predictor(max_length=max_length)

        def ours_batch(source):
            context = t5.encoder.predict_on_batch(source)
            predictor = batch_predictor
            output_ids, states = np.zeros((len(source), 1), "int32"), None
            for _ in range(T5_NEW_TOKENS):
                logits, states = predictor([context], output_ids, states)
                output_ids = np.concatenate([output_ids, logits.argmax(-1)[:, None].astype("int32")], 1)
            return output_ids

        predictors = {}

        def ours_decoder(source, method):
            context = t5.encoder.predict_on_batch(source)
            if method not in predictors:  # one predictor per method, as a script keeps its decoder
                predictors[method] = Decoder(t5.predictor(max_length=max_length), start_id=0, end_id=None,
                                             maxlen=T5_NEW_TOKENS)
            decoder = predictors[method]
            if method == "greedy":
                return decoder.greedy([context[0]])[None]
            return decoder.beam_search([context[0]], topk=4)[None]

        cases = [("greedy", 1, lambda s: ours_decoder(s, "greedy"), lambda s: hf_generate(s, 1)),
                 ("greedy", 8, ours_batch, lambda s: hf_generate(s, 1)),
                 ("beam 4", 1, lambda s: ours_decoder(s, "beam"), lambda s: hf_generate(s, 4))]
        for name, batch_size, ours, theirs in cases:
            source = rng.integers(2, 32128, size=(batch_size, T5_SOURCE_LEN)).astype("int32")
            start = time.perf_counter()
            got = ours(source)
            print(f"  {name}, batch {batch_size}: first run, compilation included: {time.perf_counter() - start:.1f} s",
                  flush=True)
            expected = theirs(source)
            same = int((got == expected).all(axis=1).sum())
            ours_s, hf_s = median_times([lambda: ours(source), lambda: theirs(source)], args.repeats)
            results[name, batch_size] = (ours_s, hf_s, same)
            print(f"  {name}, batch {batch_size}: ours {ours_s:.2f} s, HF {hf_s:.2f} s, tokens equal to HF's "
                  f"{same}/{batch_size} rows", flush=True)

    print(f"\nbackend {backend}, T5-base shape: new tokens x batch / s, encoder included")
    print("| decoding | batch | ours | HF generate | ours / HF | tokens equal to HF's |")
    print("|---|---|---|---|---|---|")
    for (name, batch_size), (ours_s, hf_s, same) in results.items():
        ours_speed, hf_speed = T5_NEW_TOKENS * batch_size / ours_s, T5_NEW_TOKENS * batch_size / hf_s
        print(f"| {name} | {batch_size} | {ours_speed:.1f} | {hf_speed:.1f} | {hf_s / ours_s:.2f}x | {same}/{batch_size} |")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    return results


def main(argv=None):
    args = parse_args(argv)
    if args.model == "t5":
        return main_t5(args)
    if args.dtype == "bfloat16":
        keras.config.set_dtype_policy("bfloat16")
    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    backend = keras.backend.backend()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rng = np.random.default_rng(0)
    rows = []

    def report(name, batch_size, seconds, note=""):
        tokens_per_s = NEW_TOKENS * batch_size / seconds
        rows.append((name, batch_size, seconds, tokens_per_s, note))
        print(f"  {name:<44} batch {batch_size}: {seconds:7.2f} s  {tokens_per_s:8.1f} tokens/s {note}", flush=True)
        return tokens_per_s

    with tempfile.TemporaryDirectory() as path:
        save_random_gpt2(path, args.layers)
        start = time.perf_counter()
        gpt2, Greedy = build_ours(path)
        if args.quantize:
            gpt2.model.quantize(args.quantize)
        print(f"backend {backend}, dtype {args.dtype}, quantized {args.quantize}, {args.layers} layers; built and loaded in "
              f"{time.perf_counter() - start:.1f} s; torch threads {torch.get_num_threads()}", flush=True)
        hf = None if args.no_hf else hf_generate(path, args.dtype)
        speeds = {}
        for batch_size in batch_sizes:
            prompts = rng.integers(0, 50257, size=(batch_size, PROMPT_LEN)).astype("int32")
            predictor = gpt2.predictor(max_length=PROMPT_LEN + NEW_TOKENS)
            start = time.perf_counter()
            ours = predictor_loop(predictor, prompts)  # compiles the prompt and the one-token steps
            print(f"  (first cached run, compilation included: {time.perf_counter() - start:.1f} s)", flush=True)
            paths = {"cached": lambda: predictor_loop(predictor, prompts)}
            if batch_size == 1:
                decoder = Greedy(predictor, start_id=None, end_id=None, maxlen=NEW_TOKENS)
                decoder.greedy([prompts[0]])
                paths["decoder"] = lambda: decoder.greedy([prompts[0]])
            if hf is not None:
                expected = hf(prompts)  # also the warm-up
                paths["hf"] = lambda: hf(prompts)
                same = (ours == expected).all(axis=1)
                first_diff = [int(np.argmax(o != e)) for o, e in zip(ours, expected) if (o != e).any()]
                print(f"  greedy tokens equal to HF's: {int(same.sum())}/{batch_size} rows"
                      + (f" (first differences at steps {first_diff})" if first_diff else ""), flush=True)
            names = {"cached": "ours, cached, predictor loop", "decoder": "ours, cached, AutoRegressiveDecoder.greedy",
                     "hf": "HF generate (use_cache=True)"}
            for key, seconds in zip(paths, median_times(list(paths.values()), args.repeats)):
                speeds[batch_size, key] = report(names[key], batch_size, seconds)
            if not args.no_full:
                seconds, step_times = full_recompute_time(gpt2.predictor(), batch_size, args.repeats)
                note = "(extrapolated from steps at prefix " + ", ".join(
                    f"{n}: {1000 * t:.0f} ms" for n, t in zip(FULL_LENGTHS, step_times)) + ")"
                speeds[batch_size, "full"] = report("ours, full recomputation (cache off)", batch_size, seconds, note)

    print(f"\nbackend {backend}, dtype {args.dtype}, quantized {args.quantize}: tokens/s (new tokens x batch / s) and ratios")
    print("| batch | ours cached | HF generate | ours full (extrapolated) | cached / HF | cached / full |")
    print("|---|---|---|---|---|---|")
    for batch_size in batch_sizes:
        cached, hf_speed, full = (speeds.get((batch_size, k)) for k in ("cached", "hf", "full"))
        cells = [f"{v:.1f}" if v else "-" for v in (cached, hf_speed, full)]
        ratios = [f"{cached / v:.2f}x" if v else "-" for v in (hf_speed, full)]
        print(f"| {batch_size} | " + " | ".join(cells + ratios) + " |")
    if (1, "decoder") in speeds:
        print(f"batch 1 through AutoRegressiveDecoder.greedy: {speeds[1, 'decoder']:.1f} tokens/s")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    return rows


if __name__ == "__main__":
    main()

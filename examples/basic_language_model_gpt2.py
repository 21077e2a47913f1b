"""Text generation with GPT-2: greedy, beam search, top-k and top-p sampling through the KV cache.

Loads any GPT-2 checkpoint, by folder or by file:

    # OpenAI's release (github.com/openai/gpt-2): hparams.json, model.ckpt.*, encoder.json, vocab.bpe
    python examples/basic_language_model_gpt2.py --checkpoint models/124M
    # an HF folder: config.json, model.safetensors, and vocab.json + merges.txt or tokenizer.json
    python examples/basic_language_model_gpt2.py --checkpoint gpt2/ --prompt "The meaning of life is"
    # or name the files: --config .../hparams.json --checkpoint .../model.ckpt [--tokenizer-dir DIR]

Without --checkpoint it builds a randomly initialised tiny GPT-2 over the 1000-piece SentencePiece
model <data-dir>/spm/sp_test_model.model and says so: the text is noise, the run shows the API.

Each strategy is one `AutoRegressiveDecoder` method on the same `predict`, whose state is the
model's KV cache (`gpt2.predictor(max_length)`): `greedy`, `beam_search(topk=beam_size)`,
`random_sample(topk=...)` and `random_sample(topp=...)`. Choose the backend with
KERAS_BACKEND=tensorflow|jax|torch.
"""

import argparse
import os
import time

from bert4keras.snippets import AutoRegressiveDecoder, data_file, quiet_tensorflow_startup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="GPT-2 folder (OpenAI or HF), TF checkpoint prefix or .safetensors file")
    p.add_argument("--config", help="hparams.json / config.json (default: found beside the checkpoint)")
    p.add_argument("--tokenizer-dir", help="folder of the BPE files (default: the config's folder)")
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")),
                   help="folder holding spm/ for the random model (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--prompt", default="The meaning of life is")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--temperature", type=float, default=1.0, help="for the sampling strategies")
    p.add_argument("--num-samples", type=int, default=2, help="texts per sampling strategy")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


if __name__ == "__main__":  # answer --help and bad arguments before the seconds TensorFlow takes to import
    parse_args()

with quiet_tensorflow_startup():  # TensorFlow's C++ start-up lines (oneDNN, CPU features, CUDA probing)
    import keras
    from bert4keras.models import build_transformer_model


class BPETokenizer:
    """GPT-2's byte-level BPE from OpenAI's encoder.json + vocab.bpe or HF's vocab.json + merges.txt
    (or tokenizer.json), run by the `tokenizers` library. `encode(text)` -> ids, `decode(ids)` -> text."""

    def __init__(self, folder):
        import tokenizers

        files = set(os.listdir(folder))
        if "tokenizer.json" in files:
            self.backend = tokenizers.Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        else:
            for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
                if vocab in files and merges in files:
                    self.backend = tokenizers.ByteLevelBPETokenizer(os.path.join(folder, vocab), os.path.join(folder, merges))
                    break
            else:
                raise FileNotFoundError(f"no tokenizer.json, vocab.json + merges.txt or encoder.json + vocab.bpe in {folder}")
        self.end_id = self.backend.token_to_id("<|endoftext|>")

    def encode(self, text):
        return self.backend.encode(text).ids

    def decode(self, ids):
        return self.backend.decode([int(i) for i in ids])


class SpPieces:
    """The same interface over a SentencePiece model, for the random model."""

    def __init__(self, path):
        from bert4keras.tokenizers import SpTokenizer

        self.tokenizer = SpTokenizer(path, token_start=None, token_end=None)
        self.end_id = self.tokenizer.token_to_id("</s>")

    def encode(self, text):
        return self.tokenizer.encode(text)[0]

    def decode(self, ids):
        return self.tokenizer.decode([int(i) for i in ids])


def load_gpt2(args):
    """(builder, tokenizer, description); a random tiny model without --checkpoint."""
    if args.checkpoint is None:
        tokenizer = SpPieces(data_file(args.data_dir, "spm/sp_test_model.model"))
        gpt2 = build_transformer_model(
            None, None, model="gpt2", final_activation="linear", return_keras_model=False,
            vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
            hidden_act="gelu_new", max_position=256, pad_token_id=None,
        )
        return gpt2, tokenizer, "NO CHECKPOINT: a randomly initialised tiny GPT-2 (2 layers, hidden 64, vocab 1000); its text is noise"
    checkpoint = args.checkpoint
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
    if os.path.isdir(checkpoint) and os.path.isfile(os.path.join(checkpoint, "hparams.json")):
        checkpoint = os.path.join(checkpoint, "model.ckpt")  # OpenAI's folder: the TF checkpoint prefix
    config = args.config or folder
    gpt2 = build_transformer_model(config, checkpoint, model="gpt2", final_activation="linear", return_keras_model=False)
    tokenizer = BPETokenizer(args.tokenizer_dir or (os.path.dirname(config) if os.path.isfile(config) else config))
    desc = (f"GPT-2 {args.checkpoint}: {gpt2.num_hidden_layers} layers, hidden {gpt2.hidden_size}, "
            f"vocab {gpt2.vocab_size}, {gpt2.max_position} positions")
    return gpt2, tokenizer, desc


class TextCompletion(AutoRegressiveDecoder):
    """Continues a prompt; `predict` is the cached predictor, its KV cache the decoding state."""

    def __init__(self, predictor, **kwargs):
        super().__init__(**kwargs)
        self.predictor = predictor

    @AutoRegressiveDecoder.wraps(default_rtype="logits", use_states=True)
    def predict(self, inputs, output_ids, states):
        return self.predictor(inputs, output_ids, states)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)  # np.random too: random_sample draws from it
    gpt2, tokenizer, desc = load_gpt2(args)
    print(desc)
    prompt_ids = tokenizer.encode(args.prompt)
    if len(prompt_ids) + args.max_new_tokens > gpt2.max_position:
        raise SystemExit(f"prompt ({len(prompt_ids)} tokens) + --max-new-tokens exceed the {gpt2.max_position} positions")
    # The cache holds the prompt and every new token; one compiled step serves all strategies.
    completion = TextCompletion(gpt2.predictor(max_length=len(prompt_ids) + args.max_new_tokens),
                                start_id=None, end_id=tokenizer.end_id, maxlen=args.max_new_tokens)

    strategies = [
        ("greedy", lambda: [completion.greedy([prompt_ids])]),
        (f"beam search (beam_size={args.beam_size})", lambda: [completion.beam_search([prompt_ids], topk=args.beam_size)]),
        (f"top-k sampling (k={args.top_k}, temperature={args.temperature})",
         lambda: completion.random_sample([prompt_ids], args.num_samples, topk=args.top_k, temperature=args.temperature)),
        (f"top-p sampling (p={args.top_p}, temperature={args.temperature})",
         lambda: completion.random_sample([prompt_ids], args.num_samples, topp=args.top_p, temperature=args.temperature)),
    ]
    print(f"prompt ({len(prompt_ids)} tokens): {args.prompt!r}; times include compiling each new batch shape "
          "(prompt, one token; 1, beam_size or num_samples rows) on first use")
    for name, run in strategies:
        t = time.time()
        outputs = run()
        seconds = time.time() - t
        new_tokens = sum(len(ids) for ids in outputs)
        print(f"\n[{name}] {seconds:.2f} s, {new_tokens} new tokens ({new_tokens / seconds:.1f} tokens/s)")
        for ids in outputs:
            print("  " + repr(tokenizer.decode(list(prompt_ids) + list(ids))))
    print(f"\nwall time: {time.time() - start:.0f}s | backend: {keras.backend.backend()}")
    print(f"settings: max_new_tokens={args.max_new_tokens} beam_size={args.beam_size} top_k={args.top_k} "
          f"top_p={args.top_p} temperature={args.temperature} num_samples={args.num_samples} seed={args.seed}")


if __name__ == "__main__":
    main()

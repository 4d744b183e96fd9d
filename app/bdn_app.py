"""bdn in a browser: upload a photo (or pick a sample), choose a denoiser, compare, zoom, download.

Started by `bdn app` (Streamlit; listens on 127.0.0.1 unless --host says otherwise). The page only lays out
widgets: checks, decoding, denoising and encoding live in app/logic.py, tested without a browser. Bad input is
shown as one line (st.error), never as a traceback; nothing a user sends becomes a filesystem path.

DIP runs in a background thread (logic.DipRun) so that the page stays live: a fragment polls it once a second for
the progress bar and the judge's curve, and its Cancel button stops the fit at the next iteration, keeping the
output reached so far. A fit whose tab was closed runs on to its iteration budget (or the judge's stop).
"""

from __future__ import annotations

import logging
import time

import streamlit as st
from bdn.app import logic  # app/ installs as bdn.app (pyproject.toml), from a checkout or a wheel alike

from bdn.errors import BdnError

log = logging.getLogger("bdn.app")
ZOOM = 4  # the zoomed region is shown this many times larger, nearest neighbour (pixels stay visible)


def show_error(message: str) -> None:
    st.error(logic.escape_markdown(message))


def decoded(uploaded, slot: str) -> logic.Loaded | None:
    """The upload decoded once per file (kept in the session); its refusal shown as one line."""
    if uploaded is None:
        return None
    cached = st.session_state.get(slot)
    if cached is None or cached[0] != uploaded.file_id:
        try:
            value: logic.Loaded | str = logic.decode_upload(uploaded.getvalue(), uploaded.name)
        except BdnError as error:
            value = str(error)
        cached = (uploaded.file_id, value)
        st.session_state[slot] = cached
    if isinstance(cached[1], str):
        show_error(cached[1])
        return None
    return cached[1]


def sidebar() -> dict:
    """Every control; returns what was chosen."""
    with st.sidebar:
        st.header("1. Image")
        source = st.radio("Source", ["Upload an image", "Sample image"], key="source", horizontal=True)
        if source == "Upload an image":
            uploaded = st.file_uploader(
                "Noisy image (PNG, JPEG or TIFF; 8 or 16 bit)",
                type=list(logic.UPLOAD_EXTENSIONS),
                max_upload_size=logic.MAX_UPLOAD_MB,
                key="upload",
            )
            sample = None
        else:
            uploaded = None
            sample = st.selectbox("Sample image (scikit-image)", list(logic.SAMPLES), key="sample")
        add_noise = st.checkbox("Add synthetic Gaussian noise", value=sample is not None, key=f"add_noise_{source}")
        noise_sigma = st.slider("Noise σ (0-255)", 1, 100, 25, key="noise_sigma", disabled=not add_noise)
        reference = st.file_uploader(
            "Clean reference (optional: PSNR and SSIM)",
            type=list(logic.UPLOAD_EXTENSIONS),
            max_upload_size=logic.MAX_UPLOAD_MB,
            key="reference",
        )

        st.header("2. Method")
        choices = {choice.name: choice for choice in logic.method_choices()}
        method = st.selectbox("Method", list(choices), format_func=lambda n: choices[n].label, key="method")
        known = st.checkbox("I know the noise level (else estimated)", value=False, key="known_sigma")
        sigma = st.slider("Noise level σ given to the method", 1.0, 100.0, 25.0, key="method_sigma") if known else None
        iterations = None
        if choices[method].family == "dip":
            # Left at bdn's default, the budget follows the image's size as `bdn denoise --method dip`'s does.
            from bdn.dip.denoise import default_iterations

            by_size = f"{default_iterations(256, 256)} up to 256x256, {default_iterations(512, 512)} at 512x512"
            if not st.checkbox(
                f"DIP iteration budget by image size ({by_size})",
                value=True,
                key="dip_default_iterations",
            ):
                iterations = st.slider("DIP iteration budget", 50, 12000, 3000, step=50, key="dip_iterations")
            st.caption("DIP takes minutes on a CPU; the judge stops it when the noise is reached, Cancel stops it.")
        go = st.button("Denoise", type="primary", key="go", width="stretch")
    return {
        "uploaded": uploaded,
        "sample": sample,
        "add_noise": add_noise,
        "noise_sigma": noise_sigma,
        "reference": reference,
        "method": method,
        "family": choices[method].family,
        "sigma": sigma,
        "iterations": iterations,
        "go": go,
    }


def the_input(chosen: dict) -> tuple[logic.Loaded, tuple, object, tuple | None] | None:
    """(the image to denoise, a key naming exactly that input, the clean reference or None, a key naming it)."""
    if chosen["sample"] is not None:
        loaded, key = logic.load_sample(chosen["sample"]), ("sample", chosen["sample"])
    else:
        loaded = decoded(chosen["uploaded"], "decoded_upload")
        if loaded is None:
            if chosen["uploaded"] is None:
                st.info("Upload a noisy image (PNG, JPEG or TIFF, 8 or 16 bit) or pick a sample image on the left.")
            return None
        key = ("upload", chosen["uploaded"].file_id)
    clean, clean_key = None, None
    if chosen["add_noise"]:
        clean, clean_key = loaded.image, key  # the image as it came is the reference for its noisy version
        key = (*key, "noise", chosen["noise_sigma"])
        noisy = remembered("noisy", key, lambda: logic.add_synthetic_noise(clean, chosen["noise_sigma"]))
        loaded = logic.Loaded(noisy, loaded.info, loaded.name)
    reference = decoded(chosen["reference"], "decoded_reference")
    if reference is not None:
        try:
            clean = logic.check_reference(loaded, reference)
            clean_key = ("reference", chosen["reference"].file_id)
        except BdnError as error:
            show_error(f"{error}: PSNR and SSIM are left out")
    return loaded, key, clean, clean_key


def denoise_now(chosen: dict, loaded: logic.Loaded, key: tuple, clean) -> None:
    """Run the chosen method: classical and models at once, DIP in the background."""
    old = st.session_state.pop("dip", None)
    if old is not None:
        old["run"].cancel()
    st.session_state.pop("result", None)
    if chosen["family"] == "dip":
        run = logic.DipRun(loaded.image, chosen["iterations"], clean=clean, sigma=chosen["sigma"]).start()
        st.session_state["dip"] = {"run": run, "key": key, "started": time.perf_counter()}
        return
    with st.spinner(f"Denoising with {chosen['method']}..."):
        start = time.perf_counter()
        try:
            image = logic.run_method(loaded.image, chosen["method"], chosen["sigma"])
        except BdnError as error:  # e.g. an image too small for the method: said once, the page stays as it was
            show_error(str(error))
            return
        seconds = time.perf_counter() - start
    st.session_state["result"] = {
        "key": key,
        "serial": time.monotonic_ns(),
        "method": chosen["method"],
        "image": image,
        "seconds": seconds,
    }


@st.fragment(run_every=1.0)
def dip_panel() -> None:
    """Live progress of the running DIP fit; when it ends, its result becomes the page's result."""
    job = st.session_state.get("dip")
    if job is None:
        return
    progress = job["run"].progress()
    text = f"DIP: iteration {progress.iteration} of {progress.total}"
    st.progress(progress.fraction, text=text)
    dip_curves(progress)
    if not progress.done:
        if st.button("Cancel DIP", key="dip_cancel"):
            job["run"].cancel()
            st.caption("Cancelling...")
        return
    st.session_state.pop("dip", None)
    if progress.error:
        st.session_state["dip_error"] = progress.error
    else:
        how = "cancelled" if progress.cancelled else f"stopped by the {progress.judge} judge" if progress.judge else ""
        st.session_state["result"] = {
            "key": job["key"],
            "serial": time.monotonic_ns(),
            "method": "dip",
            "image": progress.result,
            "seconds": time.perf_counter() - job["started"],
            "note": f"DIP {how} after {progress.iteration} iterations; kept iteration {progress.chosen_iteration}",
            "progress": progress,
        }
    st.rerun()


def dip_curves(progress: logic.DipProgress) -> None:
    """The judge's figure (residual std vs the noisy image, with its stopping level) and the PSNR, if known."""
    import pandas as pd

    columns = st.columns(2)
    if progress.curve:
        frame = pd.DataFrame(progress.curve, columns=["iteration", "residual σ"]).set_index("iteration")
        if progress.threshold is not None:
            frame["noise rule's level"] = progress.threshold
        with columns[0]:
            st.caption("The judge's figure: residual σ of the output against the noisy image (0-255)")
            st.line_chart(frame, height=220)
    if progress.psnr:
        frame = pd.DataFrame(progress.psnr, columns=["iteration", "PSNR (dB)"]).set_index("iteration")
        with columns[1]:
            st.caption("PSNR against the clean reference")
            st.line_chart(frame, height=220)


def remembered(slot: str, key: tuple, make):
    """`make()` once per key (the newest one kept in the session): reruns for a slider move stay quick."""
    kept = st.session_state.get(f"remembered_{slot}")
    if kept is None or kept[0] != key:
        kept = (key, make())
        st.session_state[f"remembered_{slot}"] = kept
    return kept[1]


def figures_line(slot: str, key: tuple, clean, image) -> str:
    """PSNR and SSIM against the reference, computed once per `key` (naming the reference and the image)."""
    psnr, ssim = remembered(slot, key, lambda: logic.scores(clean, image))
    return f"PSNR {psnr:.2f} dB, SSIM {ssim:.4f}"


def edge_slider(label: str, most: int, key: str) -> int:
    """A slider from 0 to `most`, centred at first (none when there is nothing to choose: Streamlit refuses 0..0)."""
    return st.slider(label, 0, most, most // 2, key=key) if most > 0 else 0


def show_result(loaded: logic.Loaded, key: tuple, clean, clean_key: tuple | None, result: dict | None) -> None:
    left, right = st.columns(2)
    with left:
        st.image(logic.for_display(loaded.image), caption=f"noisy: {loaded.name}", width="stretch")
        if clean is not None:
            st.markdown(f"**Noisy** · {figures_line('noisy_figures', (key, clean_key), clean, loaded.image)}")
    if result is None:
        return
    with right:
        caption = f"denoised: {result['method']} ({result['seconds']:.1f} s)"
        st.image(logic.for_display(result["image"]), caption=caption, width="stretch")
        if clean is not None:
            line = figures_line("result_figures", (key, clean_key, result["serial"]), clean, result["image"])
            st.markdown(f"**Denoised** · {line}")
    if "note" in result:
        st.caption(result["note"])
        dip_curves(result["progress"])

    st.subheader("Zoom")
    height, width = loaded.image.shape[:2]
    sizes = [s for s in (16, 32, 64, 128) if s <= min(height, width)] or [min(height, width)]
    controls = st.columns(3)
    with controls[0]:
        size = st.select_slider(
            "Region side (pixels)", sizes, value=64 if 64 in sizes else sizes[-1], key=f"zoom_{height}x{width}"
        )
    with controls[1]:
        top = edge_slider("Region top", height - size, f"zoom_top_{height}x{width}_{size}")
    with controls[2]:
        left_edge = edge_slider("Region left", width - size, f"zoom_left_{height}x{width}_{size}")
    a, b = st.columns(2)
    for column, image, what in ((a, loaded.image, "noisy"), (b, result["image"], "denoised")):
        with column:
            crop = logic.zoom(image, top, left_edge, size, ZOOM)
            st.image(logic.for_display(crop), caption=f"{what}, {size}x{size} at {ZOOM}x")

    st.subheader("Download")
    fmt = st.radio("Format", list(logic.DOWNLOAD_FORMATS), horizontal=True, key="download_format")
    encoded = result.setdefault("encoded", {})
    if fmt not in encoded:
        encoded[fmt] = logic.encode_download(result["image"], loaded.info, fmt)
    depth = logic.bit_depth(loaded.info)
    st.download_button(
        f"Download the result ({fmt}, {depth}-bit)",
        data=encoded[fmt],
        file_name=logic.download_name(loaded.name, result["method"], fmt),
        mime=logic.DOWNLOAD_FORMATS[fmt][1],
        on_click="ignore",
        key="download",
    )


def main() -> None:
    st.set_page_config(page_title="bdn: blind image denoising", layout="wide")
    st.title("bdn: blind image denoising")
    chosen = sidebar()
    given = the_input(chosen)
    if given is None:
        return
    loaded, key, clean, clean_key = given
    st.caption(f"{loaded.name}: {loaded.size_text}")
    if chosen["go"]:
        denoise_now(chosen, loaded, key, clean)
    error = st.session_state.pop("dip_error", None)
    if error:
        show_error(error)
    job = st.session_state.get("dip")
    if job is not None:
        if job["key"] == key:
            dip_panel()
        else:  # the input changed under a running fit: its result would belong to nothing on the page
            job["run"].cancel()
            st.session_state.pop("dip", None)
    result = st.session_state.get("result")
    show_result(loaded, key, clean, clean_key, result if result is not None and result["key"] == key else None)


try:
    main()
except BdnError as error:
    show_error(str(error))
except Exception as error:  # a bug: one line in the page, the traceback in the server's log
    log.exception("bdn app failed")
    show_error(f"Something went wrong ({type(error).__name__}: {error}); the details are in the server's log.")

"""The Live tab's HTML and CSS: the view, the plain source state, the legend, the side panel.

The page script (``assets/live.js``) fills it in from the live endpoints (:mod:`ui.live_routes`).
What a clinician reads first is large: the source state (Live, Paused, Stopped, Source error,
Reconnecting, Connecting) above the image, the frame and video scores beside it. The legend
says what the colours and boxes mean in clinical words (Soldati et al. 2020,
:mod:`stream.exam.scale`); engineering timings sit in a closed ``<details>``.
"""

from __future__ import annotations

import html

from stream.exam.scale import SCORE_AERATION, SCORE_SHORT
from ui.overlay import CROP1_RGB, CROP2_RGB, SCORE_RGB
from ui.timeline import KEY

CSS = """
#pleura-disclaimer {border-left: 4px solid #e6005a; padding-left: 8px;}
.pl-row {display: flex; gap: 16px; flex-wrap: wrap; align-items: flex-start;}
.pl-view {flex: 3 1 420px; min-width: 320px;}
.pl-canvas-box {position: relative;}
.pl-view canvas {width: 100%; height: auto; max-height: 56vh; object-fit: contain;
                 background: #000; border-radius: 4px; display: block;}
.pl-canvas-box.pl-notlive canvas {filter: grayscale(1) brightness(0.55);}
.pl-stale-note {position: absolute; left: 50%; top: 50%; transform: translate(-50%, -50%);
                background: rgba(0, 0, 0, 0.72); color: #fff; padding: 10px 18px;
                border-radius: 6px; font-size: 22px; font-weight: 700; text-align: center;}
.pl-state {display: flex; align-items: baseline; gap: 14px; margin-bottom: 6px;
           padding: 4px 12px; border-radius: 6px; background: #f2f2f2;}
.pl-state-label {font-size: 30px; font-weight: 800;}
.pl-state-detail {font-size: 15px; color: #333;}
.pl-state.pl-live {background: #e3f4e6;} .pl-state.pl-live .pl-state-label {color: #1a7f37;}
.pl-state.pl-paused .pl-state-label, .pl-state.pl-stopped .pl-state-label,
.pl-state.pl-ended .pl-state-label {color: #444;}
.pl-state.pl-error {background: #fde7ee;} .pl-state.pl-error .pl-state-label {color: #c0003c;}
.pl-state.pl-reconnecting, .pl-state.pl-connecting, .pl-state.pl-stalled {background: #fff3d6;}
.pl-state.pl-reconnecting .pl-state-label, .pl-state.pl-connecting .pl-state-label,
.pl-state.pl-stalled .pl-state-label {color: #8a5300;}
.pl-switches {margin-top: 4px;}
.pl-note {font-size: 13px; color: #8a5300; min-height: 1em;}
.pl-sub {font-size: 12px; color: #555;}
.pl-side {flex: 1 1 260px; font-size: 14px;}
.pl-big {font-size: 40px; font-weight: 700; line-height: 1.1;}
.pl-bar {display: flex; align-items: center; gap: 6px; font-family: monospace;}
.pl-bar.pl-chosen {font-weight: 700;}
.pl-bar.pl-chosen .pl-track {outline: 2px solid #222;}
.pl-track {flex: 1; height: 10px; background: #eee; border-radius: 3px; overflow: hidden;}
.pl-track div {height: 100%;}
.pl-side table {width: 100%; border-collapse: collapse;}
.pl-side td {padding: 1px 4px; border-bottom: 1px solid #eee;}
#pleura-source {overflow-wrap: anywhere;}
#pleura-findings td:nth-child(n+3) {white-space: nowrap; text-align: right;}
.pl-legend {font-size: 13px; margin-top: 10px; line-height: 1.45; padding-top: 6px;
             border-top: 1px solid #ddd;}
.pl-legend ul {list-style: none; margin: 2px 0; padding: 0;}
.pl-swatch {display: inline-block; width: 12px; height: 12px; border-radius: 2px;
            margin-right: 5px; vertical-align: -1px;}
.pl-frame-swatch {display: inline-block; width: 12px; height: 10px; border: 2px solid;
                  margin-right: 4px; vertical-align: -1px;}
#pleura-timings summary {cursor: pointer; color: #555; margin-top: 10px;}
#pleura-timeline {width: 100%; min-height: 120px; margin-top: 8px;}
#pleura-findings td.pl-fbar {width: 45%;}
#pleura-findings .pl-track {position: relative;}
#pleura-findings .pl-track div {background: #555;}
#pleura-findings .pl-track .pl-mark {position: absolute; top: 0; width: 2px; background: #e6005a;}
.pl-unc-tag {font-size: 15px; font-weight: 700; color: #8a5300; background: #fff3d6;
              border-radius: 4px; padding: 1px 6px; margin-left: 8px; vertical-align: middle;}
.pl-big.pl-uncertain .pl-num {color: #777;}
.pl-cert {font-size: 12px; color: #8a5300; min-height: 1em;}
.pl-warn {border-left: 4px solid #c0003c; background: #fde7ee; padding: 4px 10px;
          margin-bottom: 6px; font-size: 15px;}
.pl-mask-flag {position: absolute; left: 6px; bottom: 6px; background: rgba(0, 0, 0, 0.72);
               color: #ffdc00; padding: 3px 8px; border-radius: 4px; font-size: 13px;}
#pleura-timeline[hidden] {display: none;}
#pleura-report-strip .caption-label, #pleura-report-strip figcaption {
  white-space: normal !important; overflow: visible !important; text-overflow: clip !important;
  max-width: none !important; font-size: 12px; line-height: 1.3;}
"""


def _rgb(c: tuple[int, int, int]) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def legend_html() -> str:
    """The legend beside the scores: scores in clinical words, mask, uncertainty and crops."""
    rows = "".join(
        f"<li><span class='pl-swatch' style='background:{_rgb(SCORE_RGB[s])}'></span>"
        f"<b>{s}</b> {html.escape(SCORE_SHORT[s].split(' - ', 1)[-1])} &mdash; "
        f"{html.escape(SCORE_AERATION[s])}</li>" for s in range(len(SCORE_RGB)))
    crop = (f"<span class='pl-frame-swatch' style='border-color:{_rgb(CROP1_RGB)}'></span>"
            "crop 1: the region the frame score is made from; "
            f"<span class='pl-frame-swatch' style='border-color:{_rgb(CROP2_RGB)}'></span>"
            "crop 2: the second region the model looks at")
    return (
        "<div id='pleura-legend' class='pl-legend'>"
        "<div><b>Scores</b> (0&ndash;3, Soldati et al. 2020; the same colours in the mask, "
        f"the bars and the timeline):</div><ul>{rows}</ul>"
        "<div><b>Mask</b>: <span id='pleura-mask-legend'>each region in the colour of the "
        "score it shows</span>. <b>Uncertainty</b>: <span id='pleura-unc-legend'>brighter = "
        "the segmentation is less sure</span>.</div>"
        "<div><b>uncertain</b> beside a score: a close call (its share or its lead over the "
        "next score is small; on held-out clips such scores were wrong more often than right) "
        "or findings that contradict it. Read the image.</div>"
        f"<div id='pleura-crop-legend'><b>Boxes</b>: {crop}.</div>"
        "<div>See docs/clinician.md for how the scores are formed and when to distrust "
        "them.</div></div>")


TIMINGS = (("display fps", "pleura-fps"), ("end-to-end latency (ms)", "pleura-latency"),
           ("UI to screen (ms)", "pleura-display-latency"),
           ("worker latency (ms)", "pleura-worker-latency"), ("worker fps", "pleura-worker-fps"),
           ("frames skipped", "pleura-skipped"), ("backend", "pleura-backend"),
           ("page connection", "pleura-conn"))


def live_html() -> str:
    """The Live tab's view and side panel (element ids are what ``live.js`` fills).

    Long because it is one HTML template, read top to bottom as the page lays out.
    """
    timings = "".join(f"<tr><td>{k}</td><td id='{i}'>&ndash;</td></tr>" for k, i in TIMINGS)
    return f"""
<div id="pleura-live">
 <div id="pleura-state-bar" class="pl-state pl-connecting">
  <span id="pleura-state" class="pl-state-label">Connecting</span>
  <span id="pleura-state-detail" class="pl-state-detail">waiting for the first result</span>
 </div>
 <div id="pleura-bundle-warning" class="pl-warn" hidden></div>
 <div class="pl-row">
  <div class="pl-view">
   <div id="pleura-canvas-box" class="pl-canvas-box pl-notlive">
    <canvas id="pleura-canvas" width="640" height="480"></canvas>
    <div id="pleura-stale" class="pl-stale-note">No image yet</div>
    <div id="pleura-mask-flag" class="pl-mask-flag" hidden></div>
   </div>
   <div class="pl-switches">
    <label><input type="checkbox" id="pleura-mask" checked> segmentation mask<span
     id="pleura-mask-note"></span></label>
    &nbsp;<label id="pleura-unc-label"><input type="checkbox" id="pleura-unc"> uncertainty<span
     id="pleura-unc-note"></span></label>
    &nbsp;<label id="pleura-boxes-label"><input type="checkbox" id="pleura-boxes" checked>
     crop boxes</label>
   </div>
   <div id="pleura-crop-note" class="pl-note"></div>
   <div id="pleura-mask-why" class="pl-note"></div>
   <img id="pleura-timeline" alt="" hidden role="img"
    aria-label="timeline: frame scores and running video score over time">
   <div class="pl-sub" id="pleura-timeline-key">{html.escape(KEY)}</div>
  </div>
  <div class="pl-side">
   <div>Frame score</div>
   <div class="pl-big" id="pleura-frame-big"><span class="pl-num"
    id="pleura-frame-score">&ndash;</span><span id="pleura-frame-unc" class="pl-unc-tag"
    hidden>uncertain</span></div>
   <div class="pl-cert" id="pleura-frame-why"></div>
   <div class="pl-sub">this frame's probability of each score</div>
   <div id="pleura-frame-probs"></div>
   <div style="margin-top:10px">Video score (<span id="pleura-video-kind">running</span>,
    <span id="pleura-video-n">0</span> frames)</div>
   <div class="pl-big" id="pleura-video-big"><span class="pl-num"
    id="pleura-video-score">&ndash;</span><span id="pleura-video-unc" class="pl-unc-tag"
    hidden>uncertain</span></div>
   <div class="pl-cert" id="pleura-video-why"></div>
   <div class="pl-sub" title="Each score's share of the clip's combined (uninorm) evidence,
 per frame; for one frame these are its probabilities. The outlined bar is the video score.">
    how strongly the clip so far supports each score (outlined: the video score)</div>
   <div id="pleura-video-probs"></div>
   <div class="pl-sub" id="pleura-frame-share"></div>
   <div id="pleura-findings" hidden style="margin-top:8px">
    <div>Findings (bar: this frame; <span style="color:#e6005a">|</span> and right column:
     mean over the video)</div>
    <table id="pleura-findings-rows"></table>
   </div>
   {legend_html()}
   <table style="margin-top:8px">
    <tr><td>model bundle</td><td><span id="pleura-bundle">&ndash;</span><span
     id="pleura-bundle-note" class="pl-cert"></span></td></tr>
    <tr><td>source</td><td id="pleura-source">&ndash;</td></tr>
   </table>
   <details id="pleura-timings"><summary>Engineering timings</summary>
    <table>{timings}</table></details>
  </div>
 </div>
</div>
"""

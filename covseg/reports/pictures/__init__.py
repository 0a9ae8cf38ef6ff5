"""Pictures of one volume: infection contours over the lung-window CT (axial montage, coronal and sagittal
reformats, per-slice overlays) and heat-map overlays of activation maps.

Inputs are LPS ``[z, y, x]`` arrays as :mod:`covseg.io.read` gives them (z grows to the head, y to the back,
x to the patient's left) with ``spacing`` (x, y, z) mm. Panels are shown in the radiological convention:

* axial: patient anterior up, patient right on the image's left (array rows as they are);
* coronal: superior up (z flipped), patient right on the image's left;
* sagittal: superior up (z flipped), anterior on the image's left.

One job per module (import them directly; this package imports nothing, so that importing one module does not
pull matplotlib into a process that needs only Pillow):

* :mod:`.window`: the lung window and how the pictures name it;
* :mod:`.contours`: label colours and names, label maps, contour pixels and their drawing;
* :mod:`.scale`: the scale bar's length;
* :mod:`.pil_marks`: the Pillow font, orientation letters, scale bar and caption layout;
* :mod:`.panels`: axial, coronal and sagittal panels as uint8 RGB arrays at square display pixels;
* :mod:`.agg`: matplotlib Agg figures outside pyplot, with letters, scale bars, the colour key and wrapped text;
* :mod:`.png`: PNG bytes of a figure, PNG files written atomically;
* :mod:`.montage`, :mod:`.reformats`: the two figures of a volume;
* :mod:`.heatmap`: activation maps blended over a slice;
* :mod:`.slice_overlay`: one captioned PNG per axial slice;
* :mod:`.volume_figures`: a volume's pictures drawn and written.

Which slices the montage shows: :func:`covseg.reports.picks.pick_slices`.
"""

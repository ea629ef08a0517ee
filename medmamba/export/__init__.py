"""Model packages for 3D Slicer: export an nnU-Net results folder, verify and load it, predict, write .seg.nrrd."""
from medmamba.export.package import ModelPackage, load_package, read_manifest

__all__ = ["ModelPackage", "export_results", "load_package", "predict", "read_manifest", "write_seg_nrrd"]


def __getattr__(name):  # the heavy parts (torch, nnunetv2, pynrrd) load on first use
    if name == "export_results":
        from medmamba.export.export import export_results
        return export_results
    if name == "predict":
        from medmamba.export.predict import predict
        return predict
    if name == "write_seg_nrrd":
        from medmamba.export.seg_nrrd import write_seg_nrrd
        return write_seg_nrrd
    raise AttributeError(name)

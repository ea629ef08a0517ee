"""3D Slicer scripted module: segment the selected volume with a medmamba model package (``medmamba predict``)."""
import os
import tempfile

import ctk
import qt
import slicer
from MedMambaSegmentationLib import (
    PIP_REQUIREMENT,
    PredictionError,
    describe_package,
    medmamba_installed,
    predict_command,
    require_single_channel,
    run_command,
    work_paths,
)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)


class MedMambaSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "MedMamba Segmentation"
        parent.categories = ["Segmentation"]
        parent.contributors = ["medmamba"]
        parent.helpText = ("Segment a volume with a model package written by <code>medmamba export-slicer</code>. "
                           "The prediction runs in a separate Python process; the result loads as a segmentation "
                           "with named, coloured segments.")
        parent.acknowledgementText = "Uses nnU-Net's sliding-window predictor."


class MedMambaSegmentationWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = MedMambaSegmentationLogic()
        form = qt.QFormLayout()
        self.layout.addLayout(form)

        self.modelPath = ctk.ctkPathLineEdit()
        self.modelPath.filters = ctk.ctkPathLineEdit.Files
        self.modelPath.nameFilters = ["Model package (*.zip)"]
        self.modelPath.settingKey = "MedMambaSegmentation/ModelPath"
        form.addRow("Model package:", self.modelPath)

        self.modelInfo = qt.QLabel("")
        self.modelInfo.wordWrap = True
        form.addRow("", self.modelInfo)

        self.inputSelector = slicer.qMRMLNodeComboBox()
        self.inputSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.inputSelector.noneEnabled = False
        self.inputSelector.setMRMLScene(slicer.mrmlScene)
        form.addRow("Input volume:", self.inputSelector)

        self.deviceBox = qt.QComboBox()
        self.deviceBox.addItems(["cpu", "cuda"])
        form.addRow("Device:", self.deviceBox)

        self.applyButton = qt.QPushButton("Segment")
        form.addRow(self.applyButton)
        self.log = qt.QPlainTextEdit()
        self.log.readOnly = True
        form.addRow(self.log)
        self.layout.addStretch(1)

        self.modelPath.connect("currentPathChanged(QString)", self.onModelChanged)
        self.applyButton.connect("clicked(bool)", self.onApply)
        self.onModelChanged(self.modelPath.currentPath)

    def onModelChanged(self, path):
        try:
            self.modelInfo.text = describe_package(path) if path and os.path.isfile(path) else ""
        except Exception as err:  # noqa: BLE001  (shown to the user, not raised)
            self.modelInfo.text = str(err)

    def onApply(self):
        if not medmamba_installed():
            if not slicer.util.confirmOkCancelDisplay(f"medmamba is not installed in Slicer's Python. Install "
                                                      f"'{PIP_REQUIREMENT}' now (pip)?"):
                return
            slicer.util.pip_install(PIP_REQUIREMENT)
        self.log.clear()
        with slicer.util.tryWithErrorDisplay("Segmentation failed.", waitCursor=True):
            self.logic.segment(self.modelPath.currentPath, self.inputSelector.currentNode(),
                               self.deviceBox.currentText, self.appendLog)

    def appendLog(self, line):
        self.log.appendPlainText(line)
        slicer.app.processEvents()


class MedMambaSegmentationLogic(ScriptedLoadableModuleLogic):
    def segment(self, model_path, volume_node, device="cpu", on_line=None):
        """Save ``volume_node``, run ``medmamba predict`` on it and load the result as a segmentation node."""
        require_single_channel(model_path)
        with tempfile.TemporaryDirectory(prefix="medmamba-slicer-") as work_dir:
            input_path, output_path = work_paths(work_dir, volume_node.GetName())
            if not slicer.util.saveNode(volume_node, str(input_path)):
                raise PredictionError(f"could not save {volume_node.GetName()} to {input_path}")
            run_command(predict_command(model_path, input_path, output_path, device), on_line)
            segmentation = slicer.util.loadSegmentation(str(output_path))
        segmentation.SetName(f"{volume_node.GetName()} medmamba")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        return segmentation


class MedMambaSegmentationTest(ScriptedLoadableModuleTest):
    def runTest(self):
        slicer.mrmlScene.Clear()
        self.assertTrue(issubclass(MedMambaSegmentationLogic, ScriptedLoadableModuleLogic))
        self.assertTrue(medmamba_installed(), "pip install medmamba inside Slicer's Python first")

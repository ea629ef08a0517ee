"""``medmamba import-nnunet UMAMBA_RESULTS -o NNUNET_RESULTS``: U-Mamba's nnU-Net results for stock nnU-Net."""
from __future__ import annotations


def run(args) -> int:
    from medmamba.weights import import_nnunet_results

    for folder in import_nnunet_results(args.source, args.output, overwrite=args.overwrite):
        folds = sorted(p.name for p in folder.glob("fold_*"))
        trainer, _, configuration = folder.name.split("__")
        print(f"wrote {folder} ({', '.join(folds) or 'no folds'}): nnUNetv2_predict -d {folder.parent.name} "
              f"-c {configuration} -tr {trainer} ...")
    return 0


def register(subparsers) -> None:
    from pathlib import Path

    parser = subparsers.add_parser(
        "import-nnunet", help="turn U-Mamba's nnU-Net results into results stock nnU-Net predicts with",
        description="Convert results trained with U-Mamba's forked nnU-Net (nnUNetTrainerUMambaBot / "
        "nnUNetTrainerUMambaEnc, their plans and folds) into an nnU-Net results folder that stock nnU-Net "
        "predicts with -tr UMambaBotTrainer / UMambaEncTrainer. SOURCE is a trainer folder, a DatasetXXX_Name "
        "folder or an nnUNet_results folder; every fold's checkpoint is converted, the rest copied.")
    parser.add_argument("source", type=Path, help="U-Mamba's results (trainer, dataset or nnUNet_results folder)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the nnUNet_results folder to write into")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into trainer folders that hold files this command did not write (kept)")
    parser.set_defaults(func=run)

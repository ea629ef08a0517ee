"""`medmamba demo`: generate data, train, predict, evaluate, export and report, end to end."""


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the end-to-end demo on generated data and write a report")
    p.add_argument("--config", help="demo configuration (YAML); default: the built-in one (--print-config)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="override the configuration's device")
    p.add_argument("-o", "--output", help="override the configuration's output_dir")
    p.add_argument("--print-config", action="store_true", help="print the default configuration and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from medmamba.demo import DEFAULT_CONFIG, Demo, load_config

    if args.print_config:
        print(DEFAULT_CONFIG.read_text(encoding="utf-8"), end="")
        return 0
    Demo(load_config(args.config, args.device), args.output).run()
    return 0

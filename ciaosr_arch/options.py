"""Options files of the train and test pipelines: read as plain data, and checked where this project reads them.

BasicSR's `parse_options` reads `-opt` with PyYAML's full loader, which builds Python objects (a
`!!python/object/apply:...` tag runs code), and evals `--force_yml` values. `use_safe_options()` (called by
`ciaosr-train` / `ciaosr-test`) makes it read both with `OptionsLoader` (PyYAML's SafeLoader with BasicSR's
ordered mappings) and checks the parsed options with `check_options`. Every problem is an OptionsError with
one line naming the file or the option (and the nearest known name of a misspelt one).

Checked: `model_type`, dataset `type`s and `network_*` `type`s must be registered; the sections a model of this
project reads (its class attribute OPTIONS: `train:`, `val:`, `degradation:`), the options of this project's
datasets (their OPTIONS, plus the keys BasicSR's data loader reads) and the arguments of every network
(its constructor's parameters) must be known names with values of the right kind; a training run must have the keys
that BasicSR's training loop reads without a default (TRAINING_NEEDS); values that cannot work together are refused by
a dataset's or a model's `check_values` (e.g. scale ranges, crop sizes). Other sections (`path`, `logger`, ...) are
BasicSR's and pass unchanged.
"""
import difflib
import inspect
from collections import OrderedDict
from typing import Any

import yaml

from .errors import error_line


class OptionsError(ValueError):
    """An options file (or a --force_yml value) that cannot be used: one line naming the file or the option."""


class OptionsLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (plain data and standard tags such as `!!float` only), mappings as OrderedDict."""


OptionsLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                              lambda loader, node: OrderedDict(loader.construct_pairs(node)))

NUMBER = (int, float)


class Open(dict):
    """A section whose listed keys are checked and whose other keys pass (e.g. an optimiser's arguments)."""


class OneOf(tuple):
    """A kind of option that takes one of a few values: OneOf(('pil', 'matlab'))."""


# Keys that BasicSR itself reads from every dataset section (its data loader and trainer); any value.
BASICSR_DATASET_OPTIONS = dict.fromkeys(
    ('name', 'type', 'phase', 'scale', 'dataset_enlarge_ratio', 'prefetch_mode', 'num_prefetch_queue', 'pin_memory',
     'persistent_workers', 'use_shuffle'), object) | {'batch_size_per_gpu': int, 'num_worker_per_gpu': int}
# What BasicSR's training loop reads with no default (basicsr/train.py), so that a missing one was a KeyError only
# after the model, the data and the first iterations: checked when training (`is_train`; val.val_freq with a val:).
TRAINING_NEEDS = {'train.total_iter': 'the iterations to train', 'logger.print_freq': 'iterations between log lines',
                  'logger.save_checkpoint_freq': 'iterations between checkpoints',
                  'val.val_freq': 'iterations between validations; leave out val: to train without them'}
KIND_NAMES = {NUMBER: 'a number', int: 'a whole number', float: 'a number', bool: 'true or false', str: 'a string',
              list: 'a list', dict: 'a mapping', type(None): '~'}


def kinds_of(defaults):
    """{key: kind} of a dict of default values: whole numbers stay int, other numbers take any number."""
    return {key: NUMBER if isinstance(value, float) else type(value) for key, value in defaults.items()}


def yaml_problem(err):
    """A PyYAML error (with its file, line and column where known) as one line."""
    return ' '.join(str(err).split())


def parse_value(text):
    """A `--force_yml KEY=VALUE` value as BasicSR means it ('~' or 'none': None; true/false; numbers;
    `!!float 1e-3`; `[1, 2]`; else a string), parsed by OptionsLoader instead of eval.

    OptionsError if it is not plain YAML data.
    """
    if text.lower() == 'none':
        return None
    try:
        return yaml.load(text, Loader=OptionsLoader)
    except yaml.YAMLError as err:
        raise OptionsError(f'--force_yml value {text!r}: {yaml_problem(err)}') from None


def _describe(kind: Any) -> str:
    if isinstance(kind, OneOf):
        return 'one of ' + ', '.join(map(repr, kind))
    if kind in KIND_NAMES:
        return KIND_NAMES[kind]
    return ' or '.join(KIND_NAMES[k] if k in KIND_NAMES else k.__name__ for k in kind)


def _is_kind(value, kind):
    if isinstance(kind, OneOf):
        return isinstance(value, str) and value in kind
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if object in kinds:
        return True
    if isinstance(value, bool) and bool not in kinds:  # YAML's true is not a number here
        return False
    return isinstance(value, kinds)


def _unknown(where, key, known, what='option'):
    near = difflib.get_close_matches(str(key), [str(k) for k in known], n=1)
    hint = f"did you mean '{near[0]}'?" if near else f'known: {", ".join(sorted(map(str, known)))}'
    return OptionsError(f"{where}: unknown {what} '{key}' ({hint})")


def check_section(where, section, schema):
    """Check a mapping of options against `schema` ({key: kind}); `where` names it in messages ('train').

    A kind is a type or tuple of types (int excludes true/false; NUMBER is int or float; object is anything),
    a OneOf of the values allowed, a dict (a nested section whose keys are checked) or an Open dict (a nested
    section whose other keys pass).
    OptionsError names the first key that is not in the schema (with the nearest known key), or the first value of
    the wrong kind; a YAML 1.1 string that reads as a number (`1e-3`) gets the way to write it as one.
    """
    if not isinstance(section, dict):
        raise OptionsError(f'{where}: expected a mapping of options, got {section!r}')
    for key, value in section.items():
        if key not in schema:
            if isinstance(schema, Open):
                continue
            raise _unknown(where, key, schema)
        kind, name = schema[key], f'{where}.{key}'
        if isinstance(kind, dict):
            check_section(name, value, kind)
        elif not _is_kind(value, kind):
            hint = ''
            if isinstance(value, str) and kind in (NUMBER, int) and _reads_as_number(value):
                hint = f' (YAML 1.1 reads {value} as a string: write it with a dot and a signed exponent, e.g. 1.0e-3)'
            raise OptionsError(f'{name}: expected {_describe(kind)}, got {value!r}{hint}')


def _reads_as_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _registered(registry, name, where):
    """The class registered under `name`, else OptionsError with the nearest registered name."""
    for registered in (name, f'{name}_basicsr'):  # BasicSR's own name of a class registered twice
        if isinstance(name, str) and registered in registry:
            return registry.get(registered)
    raise _unknown(where, name, list(registry.keys()), what='type')


def check_options(opt):
    """Check parsed options (a dict as BasicSR's parse_options returns it) as the module docstring says.

    Raises OptionsError (one line) for the first problem found.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

    model = _registered(MODEL_REGISTRY, opt.get('model_type'), 'model_type')
    for section, schema in getattr(model, 'OPTIONS', {}).items():
        if opt.get(section) is not None:
            check_section(section, opt[section], schema)
    for name, what in TRAINING_NEEDS.items() if opt.get('is_train') else ():
        section, key = name.split('.')
        if section == 'val' and opt.get('val') is None:
            continue
        if not isinstance(opt.get(section), dict) or key not in opt[section]:
            raise OptionsError(f'{name}: missing ({what}); BasicSR\'s training loop reads it')
    for phase, dataset in (opt.get('datasets') or {}).items():
        where = f'datasets.{phase}'
        check_section(where, dataset, Open(type=str))
        dataset_class = _registered(DATASET_REGISTRY, dataset.get('type'), f'{where}.type')
        schema = getattr(dataset_class, 'OPTIONS', None)
        if schema is not None:
            check_section(where, dataset, {**BASICSR_DATASET_OPTIONS, **schema})
        values_check = getattr(dataset_class, 'check_values', None)
        if values_check is not None:
            values_check(where, dataset)
    for key, network in opt.items():
        if key.startswith('network_'):
            check_section(key, network, Open(type=str))
            parameters = inspect.signature(_registered(ARCH_REGISTRY, network.get('type'), f'{key}.type')).parameters
            check_arguments(key, network, parameters, {'type': str})
            if 'encoder' in parameters:  # CiaoSR's, LIIF's
                from .archs.encoders import ENCODERS
                name = network.get('encoder', parameters['encoder'].default)
                if not isinstance(name, str) or name not in ENCODERS:
                    raise _unknown(f'{key}.encoder', name, list(ENCODERS), what='encoder')
                if isinstance(network.get('encoder_opt'), dict):
                    check_arguments(f'{key}.encoder_opt', network['encoder_opt'],
                                    inspect.signature(ENCODERS[name]).parameters)
    values_check = getattr(model, 'check_values', None)
    if values_check is not None:
        values_check(opt)


def check_arguments(where, section, parameters, extra=None):
    """Check that the keys of `section` are arguments of a constructor with these `parameters` (inspect's), plus the
    `extra` schema, unless it takes **kwargs; OptionsError (one line) with the nearest name otherwise."""
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        check_section(where, section, dict.fromkeys(parameters, object) | (extra or {}))


def use_safe_options():
    """Make BasicSR's train and test pipelines read options with OptionsLoader and parse_value, and check them with
    `check_options` and against this machine (num_gpu at most the CUDA GPUs visible); a file that cannot be read or
    used raises OptionsError before anything is created."""
    import basicsr.test
    import basicsr.train
    import basicsr.utils.options as basicsr_options

    if getattr(basicsr_options.parse_options, 'checks_options', False):
        return
    dumper = basicsr_options.ordered_yaml()[1]
    basicsr_parse = basicsr_options.parse_options

    def parse_options(root_path, is_train=True):
        try:
            opt, args = basicsr_parse(root_path, is_train)
        except OptionsError:  # ours (a --force_yml value, --launcher): its own message
            raise
        except OSError as err:
            raise OptionsError(f'cannot read the options file: {err}') from None
        except yaml.YAMLError as err:  # includes tags that are not plain data, e.g. !!python/object/apply
            raise OptionsError(f'{yaml_problem(err)} (options files hold plain YAML data only)') from None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:  # what BasicSR's own reading
            # of the file and of --force_yml KEY:SUB=VALUE does with a file that is not a mapping, a section it
            # needs that is missing (num_gpu, logger, path), or a --force_yml that names no option
            raise OptionsError(f'BasicSR cannot read these options ({error_line(err, named=True)}); compare the file '
                               'with one of options/*.yml, and write --force_yml as KEY:SUB=VALUE of an existing '
                               'section') from None
        if not is_train and opt.get('val') is None:  # the test pipeline reads val.save_img
            opt['val'] = OrderedDict()
        if isinstance(opt.get('val'), dict):  # what BasicSR reads without a default: the images saved by a test
            # run and not during training (unless asked), under the run's name
            opt['val'].setdefault('save_img', not is_train)
            opt['val'].setdefault('suffix', None)
        check_options(opt)
        import torch  # (BasicSR's parse has imported it already)

        gpus, visible = opt.get('num_gpu'), torch.cuda.device_count()  # ('auto' is the visible count by now)
        if not (isinstance(gpus, int) and not isinstance(gpus, bool) and 0 <= gpus <= visible):
            raise OptionsError(f'num_gpu: {gpus!r} cannot run here: {visible} CUDA GPU{"s" * (visible != 1)} visible '
                               '(num_gpu: 0 runs on the CPU, auto on what there is)')
        return opt, args

    parse_options.checks_options = True
    basicsr_options.ordered_yaml = lambda: (OptionsLoader, dumper)
    basicsr_options._postprocess_yml_value = parse_value
    basicsr_options.parse_options = basicsr.train.parse_options = basicsr.test.parse_options = parse_options

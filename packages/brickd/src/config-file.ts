/**
 * brickd --config FILE: one option per line, `name = value` with the long
 * option's name (`data = /srv/dunix/disk1`, `tls-dir = /etc/dunix/...`),
 * `name = true|false` or a bare `name` for a flag; blank lines and lines
 * starting with # are skipped; a value may be double-quoted. The result is
 * the equivalent command-line arguments, put before the real ones so that
 * an option given on the command line wins (commander keeps the last).
 */
export interface ConfigOption {
  /** Long name without dashes (`tls-dir`). */
  name: string;
  /** Takes a value (`--data <dir>`), or is a flag (`--insecure`). */
  takesValue: boolean;
}

export class ConfigFileError extends Error {
  constructor(file: string, line: number, why: string) {
    super(`${file}:${line}: ${why}`);
    this.name = 'ConfigFileError';
  }
}

/** Options that make no sense in a config file. */
const NOT_IN_FILE = new Set(['config', 'help', 'version']);

export function configArgs(text: string, options: readonly ConfigOption[], file = 'config'): string[] {
  const known = new Map(options.map((o) => [o.name, o]));
  const out: string[] = [];
  const seen = new Set<string>();
  text.split('\n').forEach((raw, i) => {
    const lineNo = i + 1;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^([a-z][a-z0-9-]*)\s*(?:=\s*(.*))?$/.exec(line);
    if (!m) throw new ConfigFileError(file, lineNo, `expected "name = value", got ${JSON.stringify(line)}`);
    const name = m[1]!;
    let value = m[2];
    const opt = known.get(name);
    if (!opt || NOT_IN_FILE.has(name))
      throw new ConfigFileError(file, lineNo, `unknown option ${JSON.stringify(name)} (see brickd --help)`);
    if (seen.has(name)) throw new ConfigFileError(file, lineNo, `${name} is given twice`);
    seen.add(name);
    if (value !== undefined && value.startsWith('"')) {
      if (!/^"(?:[^"\\]|\\.)*"$/.test(value))
        throw new ConfigFileError(file, lineNo, `unterminated quoted value of ${name}`);
      value = JSON.parse(value) as string;
    }
    if (opt.takesValue) {
      if (value === undefined || value === '')
        throw new ConfigFileError(file, lineNo, `${name} needs a value`);
      out.push(`--${name}`, value);
    } else if (value === undefined || value === 'true') out.push(`--${name}`);
    else if (value !== 'false')
      throw new ConfigFileError(
        file,
        lineNo,
        `${name} is a flag: true, false or no value, not ${JSON.stringify(value)}`,
      );
  });
  return out;
}

/** Where argv names the config file (`--config FILE` or `--config=FILE`); undefined: none. */
export function configFileOf(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--config') return argv[i + 1];
    if (a.startsWith('--config=')) return a.slice('--config='.length);
  }
  return undefined;
}

/** `--name VALUE` options of a bench script: the value after the name, or the default. */
export function optionReader(args = process.argv.slice(2)) {
  return (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : dflt;
  };
}

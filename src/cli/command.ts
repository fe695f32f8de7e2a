/** What a command module gives main.ts: its registration, and how it hands back its exit code. */
import type { Command } from 'commander';

/** What a command's action hands back: its exit code, when it is done. */
export type SetResult = (result: Promise<number>) => void;

/** Adds one command (options, help, action) to the program. */
export type RegisterCommand = (cli: Command, setResult: SetResult) => void;

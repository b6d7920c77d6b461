#!/usr/bin/python3
"""A Modbus server for tank's tests and benchmark: pymodbus (Debian python3-pymodbus 3.0), not
tank's code, serving known values over TCP on 127.0.0.1 or RTU on a serial device (a pty).

    modbus_server.py --tcp PORT | --rtu DEVICE [--slaves N] [--values FILE] [--registers N]
                     [--delay-ms MS] [--failing-slave ID]

Every slave id 1..N holds the same data. --values names a JSON list of
    {"table": "holding"|"input"|"coil"|"discrete", "address": A, "type": T, "order": O, "value": V}
each encoded by pymodbus's own BinaryPayloadBuilder (T: int16 ... float64, string; O: ABCD, DCBA,
BADC or CDAB, mapped to pymodbus's byte and word order) or, for coils and discrete inputs, set as
a bit. --registers N fills holding and input registers 0..N-1 with their address (the benchmark).
--delay-ms makes every read that long (a slow device); --failing-slave makes that slave's reads
raise, which pymodbus answers with exception 4 (server device failure). A request to a slave id
outside 1..N is never answered (pymodbus's framer drops it): a device that is not there. The server is zero-based
(zero_mode=True): address A is register A on the wire, as tank addresses them. "ready" is printed
once it serves.
"""

import argparse
import asyncio
import json
import sys
import time

from pymodbus.constants import Endian
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.payload import BinaryPayloadBuilder
from pymodbus.server.async_io import ModbusSerialServer, ModbusTcpServer
from pymodbus.transaction import ModbusRtuFramer, ModbusSocketFramer

SIZE = 4096

# tank's (and Telegraf's) byte orders as pymodbus's (byte order within a word, word order).
ORDERS = {
    "ABCD": (Endian.Big, Endian.Big),
    "CDAB": (Endian.Big, Endian.Little),
    "BADC": (Endian.Little, Endian.Big),
    "DCBA": (Endian.Little, Endian.Little),
}


def encode(item):
    byteorder, wordorder = ORDERS[item.get("order", "ABCD")]
    b = BinaryPayloadBuilder(byteorder=byteorder, wordorder=wordorder)
    t, v = item["type"], item["value"]
    {
        "int16": b.add_16bit_int, "uint16": b.add_16bit_uint,
        "int32": b.add_32bit_int, "uint32": b.add_32bit_uint,
        "int64": b.add_64bit_int, "uint64": b.add_64bit_uint,
        "float32": b.add_32bit_float, "float64": b.add_64bit_float,
        "string": lambda s: b.add_string(s.encode("ascii")),
    }[t](v)
    return b.to_registers()


class Slave(ModbusSlaveContext):
    def __init__(self, delay, failing, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay
        self.failing = failing

    def getValues(self, fc_as_hex, address, count=1):
        if self.failing:
            raise RuntimeError("this slave is made to fail")
        if self.delay:
            time.sleep(self.delay)
        return super().getValues(fc_as_hex, address, count)


def build_context(args):
    tables = {"holding": [0] * SIZE, "input": [0] * SIZE, "coil": [False] * SIZE, "discrete": [False] * SIZE}
    for a in range(args.registers):
        tables["holding"][a] = a
        tables["input"][a] = a
    if args.values:
        with open(args.values, encoding="utf-8") as f:
            for item in json.load(f):
                table, address = item["table"], item["address"]
                if table in ("coil", "discrete"):
                    tables[table][address] = bool(item["value"])
                else:
                    words = encode(item)
                    tables[table][address:address + len(words)] = words
    slaves = {}
    for unit in range(1, args.slaves + 1):
        slaves[unit] = Slave(
            args.delay_ms / 1000.0, unit == args.failing_slave, zero_mode=True,
            hr=ModbusSequentialDataBlock(0, list(tables["holding"])),
            ir=ModbusSequentialDataBlock(0, list(tables["input"])),
            co=ModbusSequentialDataBlock(0, list(tables["coil"])),
            di=ModbusSequentialDataBlock(0, list(tables["discrete"])))
    return ModbusServerContext(slaves=slaves, single=False)


async def serve(args):
    context = build_context(args)
    if args.tcp:
        server = ModbusTcpServer(context, ModbusSocketFramer, None, ("127.0.0.1", args.tcp),
                                 allow_reuse_address=True)
        task = asyncio.create_task(server.serve_forever())
        await server.serving
    else:
        server = ModbusSerialServer(context, ModbusRtuFramer, port=args.rtu, baudrate=args.baud, timeout=0.05)
        await server.start()
        task = asyncio.create_task(server.serve_forever())
    print("ready", flush=True)
    await task


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tcp", type=int)
    p.add_argument("--rtu")
    p.add_argument("--baud", type=int, default=19200)
    p.add_argument("--slaves", type=int, default=1)
    p.add_argument("--values")
    p.add_argument("--registers", type=int, default=0)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--failing-slave", type=int, default=0)
    args = p.parse_args()
    if bool(args.tcp) == bool(args.rtu):
        p.error("give --tcp PORT or --rtu DEVICE")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""A Modbus peer for wardgate's integration tests (pymodbus 3.16).

Serves two slaves on one line, as on a service centre's RS-485 bus:
  id 1  XY-MD02 (SHT20) temperature/humidity: input registers 1-2
        = 235, 451 (23.5 degC, 45.1 %RH); holding register 0x0101 = 1
        (its own slave address, as the real sensor keeps it)
  id 2  Eastron SDM120 energy meter: input registers, float32 big-endian
        high word first (V, A, W, VA, var, PF, Hz, kWh ...)
and a third for register-map tests:
  id 3  holding 10-15 (u16, i16, u32 little word order), coil 0-3,
        discrete input 0-1.
Registers that are not defined answer with exception 02 (illegal data
address), like real devices; other slave ids get no answer (an absent
slave on a real bus is silent).

  modbus_peer.py rtu <serial port> [--trace FILE] [--silent FILE]
  modbus_peer.py tcp <port> [--trace FILE]

Prints "ready" on stdout once it listens (RTU: the serial port is open),
and nothing if it could not (it exits non-zero). TCP port 0 binds a port
the system picks; it prints "ready <port>" with the port it listens on. With --trace, every frame
received and sent is appended to FILE as "rx|tx <hex>". With --silent
(RTU), the slave ids listed in FILE (whitespace-separated; read on every
reply, the file may be absent) stop answering, as a slave that lost power.
"""
import argparse
import asyncio
import struct
import sys

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def f32(x):
    hi, lo = struct.unpack(">HH", struct.pack(">f", x))
    return [hi, lo]


def unused_regs():
    # pymodbus wants every block non-empty: one register far away
    return [SimData(9999, values=[0], datatype=DataType.REGISTERS)]


def unused_bits():
    return [SimData(9999, values=[False], datatype=DataType.BITS)]


def sdm120():
    regs = {
        0x0000: 231.2,  # voltage V
        0x0006: 1.25,  # current A
        0x000C: 280.0,  # active power W
        0x0012: 289.0,  # apparent power VA
        0x0018: 71.5,  # reactive power var
        0x001E: 0.97,  # power factor
        0x0046: 50.0,  # frequency Hz
        0x0048: 1234.5,  # import kWh
        0x004A: 0.5,  # export kWh
        0x0156: 1235.0,  # total kWh
    }
    ir = [SimData(a, values=f32(v), datatype=DataType.REGISTERS) for a, v in regs.items()]
    return SimDevice(id=2, simdata=(unused_bits(), unused_bits(), unused_regs(), ir))


def xy_md02():
    ir = [SimData(1, values=[235, 451], datatype=DataType.REGISTERS)]
    hr = [SimData(0x0101, values=[1], datatype=DataType.REGISTERS)]
    return SimDevice(id=1, simdata=(unused_bits(), unused_bits(), hr, ir))


def mixed():
    # holding 10: u16 500; 11: i16 -25; 12-13: u32 70000 with the low word
    # first; 14-15: i32 -2 high word first
    u32 = 70000
    hr = [
        SimData(
            10,
            values=[500, (-25) & 0xFFFF, u32 & 0xFFFF, u32 >> 16, 0xFFFF, 0xFFFE],
            datatype=DataType.REGISTERS,
        )
    ]
    co = [SimData(0, values=[True, False, True, False], datatype=DataType.BITS)]
    di = [SimData(0, values=[False, True], datatype=DataType.BITS)]
    return SimDevice(id=3, simdata=(co, di, hr, unused_regs()))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["rtu", "tcp"])
    ap.add_argument("where")
    ap.add_argument("--trace")
    ap.add_argument("--silent")
    a = ap.parse_args()
    trace_file = open(a.trace, "a", buffering=1) if a.trace else None

    known = {1, 2, 3}

    def silenced():
        if not a.silent:
            return set()
        try:
            with open(a.silent) as f:
                return {int(x) for x in f.read().split()}
        except FileNotFoundError:
            return set()

    def trace(sending, data):
        # pymodbus answers unknown ids with an exception when given SimDevices
        # (ignore_missing_devices only covers the old datastore): drop those
        # replies, so an absent slave is silent as on a real bus.
        if sending and a.mode == "rtu" and data and data[0] not in known:
            return b""
        if sending and a.mode == "rtu" and data and data[0] in silenced():
            if trace_file is not None:
                trace_file.write("silent " + data.hex(" ") + "\n")
            return b""
        if trace_file is not None:
            trace_file.write(("tx " if sending else "rx ") + data.hex(" ") + "\n")
        return data

    devices = [xy_md02(), sdm120(), mixed()]
    if a.mode == "rtu":
        server = ModbusSerialServer(
            devices,
            port=a.where,
            baudrate=9600,
            trace_packet=trace,
            # an absent slave is silent on a real bus
            ignore_missing_devices=True,
        )
    else:
        server = ModbusTcpServer(
            devices, address=("127.0.0.1", int(a.where)), trace_packet=trace
        )
    # Returns once listening, raises if the port or serial line could not
    # be opened: "ready" means it really serves.
    await server.serve_forever(background=True)
    if a.mode == "tcp":
        port = server.transport.sockets[0].getsockname()[1]
        print(f"ready {port}", flush=True)
    else:
        print("ready", flush=True)
    await server.serving


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
